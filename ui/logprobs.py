"""Token probabilities: the logprobs of a reply read from its chunks, coloured and explained.

Chat chunks carry `logprobs.content` (one entry per token with its `top_logprobs`); completion
chunks carry OpenAI's older columns (`tokens`, `token_logprobs`, `top_logprobs` as dicts), and
with `echo` the prompt's own tokens come first. Both become `Token`s; `tokens_html` draws them
as coloured chips whose tooltip lists the alternatives the model weighed.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

MAX_TOP_LOGPROBS = 5  # OpenAI's ceiling for completions (chat allows 20); the toggle offers 0-5


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    logprob: float | None  # None for the prompt's first token: nothing came before it
    alternatives: tuple[tuple[str, float], ...] = field(default=())  # (token, logprob), best first
    prompt: bool = False

    @property
    def probability(self) -> float | None:
        return None if self.logprob is None else math.exp(self.logprob)


def tokens_of(logprobs: dict[str, Any] | None) -> list[Token]:
    """The tokens in one choice's `logprobs` of a chat or completion chunk (or response)."""
    if not logprobs:
        return []
    if "content" in logprobs:  # chat
        return [
            Token(str(entry.get("token", "")), _number(entry.get("logprob")),
                  _ranked((alt.get("token", ""), alt.get("logprob")) for alt in entry.get("top_logprobs") or ()))
            for entry in logprobs.get("content") or ()
        ]
    texts = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or []
    return [
        Token(str(text), _number(values[i] if i < len(values) else None),
              _ranked((tops[i] or {}).items() if i < len(tops) and tops[i] else ()))
        for i, text in enumerate(texts)
    ]


def mark_prompt(tokens: list[Token], count: int) -> list[Token]:
    """The first `count` tokens marked as the prompt's (completion mode with echo)."""
    return [Token(t.text, t.logprob, t.alternatives, prompt=i < count) for i, t in enumerate(tokens)]


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _ranked(pairs: Any) -> tuple[tuple[str, float], ...]:
    # vLLM reports -inf for a token with no probability mass left; keep it, ranked last.
    clean = [(str(t), float(lp)) for t, lp in pairs if lp is not None]
    return tuple(sorted(clean, key=lambda pair: pair[1], reverse=True))


# --- colour -------------------------------------------------------------------------------


def colour(probability: float | None) -> str:
    """Red (unlikely) through yellow to green (certain); grey when there is no probability.

    The hue follows the probability linearly, so equal steps of probability look equally far
    apart; the light background keeps the text readable on both themes' text colours.
    """
    if probability is None:
        return "hsl(0, 0%, 85%)"
    p = min(max(probability, 0.0), 1.0)
    return f"hsl({round(120 * p)}, 75%, 78%)"


def summary(tokens: list[Token]) -> dict[str, str]:
    """Figures over the generated tokens: how many, mean probability and perplexity."""
    scored = [t.logprob for t in tokens if not t.prompt and t.logprob is not None]
    if not scored:
        return {}
    mean_logprob = sum(scored) / len(scored)
    finite = [lp for lp in scored if math.isfinite(lp)]
    return {
        "tokens": str(len(scored)),
        "mean probability": f"{sum(math.exp(lp) for lp in finite) / len(scored):.0%}",
        "perplexity": f"{math.exp(-mean_logprob):.2f}" if math.isfinite(mean_logprob) else "∞",
    }


# --- HTML ---------------------------------------------------------------------------------


def _shown(text: str) -> str:
    # Whitespace tokens must stay visible and hoverable: mark newlines and bare spaces.
    escaped = html.escape(text)
    if not text.strip():
        return escaped.replace("\n", "↵\n").replace("\t", "⇥") if text else "∅"
    return escaped.replace("\n", "↵\n")


def _percent(logprob: float) -> str:
    p = math.exp(logprob)
    return f"{p:.1%}" if p >= 0.001 else f"{p:.1e}"


def token_html(token: Token) -> str:
    p = token.probability
    classes = "tok prompt" if token.prompt else "tok"
    rows = "".join(
        f'<tr class="{"chosen" if alt == token.text else ""}"><td><code>{html.escape(repr(alt)[1:-1])}'
        f"</code></td><td>{_percent(lp)}</td></tr>"
        for alt, lp in token.alternatives
    )
    if p is None:
        tip = "<em>first prompt token: nothing before it to predict it from</em>"
    else:
        head = f"<b>{_percent(token.logprob)}</b> <small>logprob {token.logprob:.3f}</small>"  # type: ignore[arg-type]
        tip = head + (f"<table>{rows}</table>" if rows else "")
    data = "" if p is None else f' data-p="{p:.4f}"'
    return (f'<span class="{classes}" tabindex="0"{data} style="background:{colour(p)}">'
            f'{_shown(token.text)}<span class="alts" role="tooltip">{tip}</span></span>')


def tokens_html(tokens: list[Token], *, note: str = "") -> str:
    """The reply as coloured token chips, a legend, and figures; hover or focus a chip for its
    alternatives."""
    if not tokens:
        return f'<div class="logprobs empty">{html.escape(note or "No token probabilities yet.")}</div>'
    figures = "".join(f'<span data-figure="{html.escape(k)}"><small>{html.escape(k)}</small> '
                      f"<b>{html.escape(v)}</b></span>" for k, v in summary(tokens).items())
    legend = ('<span class="legend">probability <i style="background:{}">0 %</i>'
              '<i style="background:{}">50 %</i><i style="background:{}">100 %</i>'
              '{}</span>').format(colour(0.0), colour(0.5), colour(1.0),
                                  ' <i class="prompt">prompt</i>' if any(t.prompt for t in tokens) else "")
    chips = "".join(token_html(t) for t in tokens)
    return (f'<div class="logprobs"><div class="lp-head">{legend}{figures}</div>'
            f'<div class="lp-tokens">{chips}</div></div>')


LOGPROBS_CSS = """
.logprobs { font-size: 0.95em; }
.logprobs.empty { color: var(--body-text-color-subdued); padding: 6px 0; }
.logprobs .lp-head { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 6px; align-items: center; }
.logprobs .lp-head small { color: var(--body-text-color-subdued); }
.logprobs .legend i { font-style: normal; padding: 0 6px; margin-left: 4px; border-radius: 3px; color: #111; }
.logprobs .legend i.prompt, .logprobs .tok.prompt { outline: 1px dashed #666; }
.logprobs .lp-tokens { white-space: pre-wrap; line-height: 1.9; font-family: var(--font-mono); }
.logprobs .tok { position: relative; color: #111; border-radius: 3px; padding: 1px 0;
  margin: 0 1px; cursor: help; }
.logprobs .tok.prompt { opacity: 0.85; }
.logprobs .tok .alts { display: none; position: absolute; left: 0; top: 1.8em; z-index: 50;
  background: var(--background-fill-primary); color: var(--body-text-color);
  border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 6px 8px;
  white-space: nowrap; box-shadow: 0 2px 8px rgba(0,0,0,.2); font-family: var(--font); }
.logprobs .tok:hover .alts, .logprobs .tok:focus .alts { display: block; }
.logprobs .alts table { border-collapse: collapse; margin-top: 4px; }
.logprobs .alts td { padding: 1px 6px; border: none; }
.logprobs .alts tr.chosen td { font-weight: bold; }
"""
