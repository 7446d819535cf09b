"""The playground's chat view: a conversation with a system prompt, streamed replies, Stop,
Regenerate, Edit and resend, tool calls and their results, Clear, export and import.

The conversation lives in a `gr.State` as the OpenAI `messages` after the system prompt
(ui/conversation.py); every reply is one chat request with all of it, sent through `TextGen`
with the settings column's options.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from textgen import TextGen

from .. import conversation, downloads, forms
from ..alerts import user_error
from ..streaming import Run, StopButtons, buttons, follow, readiness_problem, session_of
from . import replies
from .controls import Controls
from .replies import ReplyViews

VIEW = "chat"
EXPORT_LABEL = "Export conversation (JSON)"
SYSTEM_PLACEHOLDER = "You are a concise assistant. (Optional: sent first, as the system message.)"


@dataclass
class ChatView:
    column: gr.Column
    system: gr.Textbox
    chatbot: gr.Chatbot
    message: gr.Textbox
    send: gr.Button
    stop: gr.Button
    regenerate: gr.Button
    clear: gr.Button
    tool_row: gr.Row
    tool_result: gr.Textbox
    send_tool: gr.Button
    export: gr.DownloadButton
    upload: gr.UploadButton
    turns: gr.State
    sent_options: gr.State  # the options the conversation was last sent with, for its export
    responses_api: gr.Checkbox  # send through /v1/responses instead of /v1/chat/completions


def build_view(*, visible: bool) -> ChatView:
    """Lay out the chat view inside the current Blocks context."""
    with gr.Column(visible=visible, elem_id="pg-chat-view") as column:
        system = gr.Textbox(label="System prompt", lines=2, placeholder=SYSTEM_PLACEHOLDER,
                            elem_id="pg-system")
        chatbot = gr.Chatbot(label="Conversation", height=420, editable="user",
                             elem_id="pg-chat", buttons=["copy", "copy_all"],
                             placeholder="Send a message to start the conversation. Your "
                                         "messages can be edited (pencil) and sent again.")
        message = gr.Textbox(label="Message", lines=2, elem_id="pg-message",
                             placeholder="Write a haiku about GPUs.  (Enter sends, Shift+Enter "
                                         "is a new line)")
        with gr.Row():
            send = gr.Button("Send", variant="primary", elem_id="pg-send")
            # Always clickable, and no output of a reply: see streaming.buttons.
            stop = gr.Button("Stop", variant="stop", elem_id="pg-chat-stop")
            regenerate = gr.Button("Regenerate", elem_id="pg-regenerate")
            clear = gr.Button("Clear", elem_id="pg-clear")
        with gr.Row(visible=False, elem_id="pg-tool-row") as tool_row:
            tool_result = gr.Textbox(label="Tool result", lines=2, scale=4, elem_id="pg-tool-result",
                                     placeholder='e.g. {"temperature": 18, "sky": "clear"}')
            send_tool = gr.Button("Send tool result", scale=1, elem_id="pg-send-tool")
        responses_api = gr.Checkbox(
            label="Responses API", value=False, elem_id="pg-responses-api",
            info="Send the conversation to /v1/responses (OpenAI's Responses, stateless) instead "
                 "of /v1/chat/completions: temperature, top_p, penalties and max_tokens go "
                 "with it; tools and JSON stay with chat.")
        with gr.Row():
            export = gr.DownloadButton(EXPORT_LABEL, size="sm", value=None,
                                       interactive=False, elem_id="pg-export")
            upload = gr.UploadButton("Import conversation (JSON)", size="sm", file_types=[".json"],
                                     elem_id="pg-import")
    return ChatView(column, system, chatbot, message, send, stop, regenerate, clear, tool_row,
                    tool_result, send_tool, export, upload, gr.State([]), gr.State({}),
                    responses_api)


def export_button(model_id: str | None, system: str | None, turns: conversation.Turns,
                  options: dict[str, Any]) -> gr.DownloadButton:
    """The export button for a conversation: its file and message count, or disabled when empty.

    With turns it writes a file, so it belongs in a queued event: Gradio builds the file's URL
    from the request, and only the queue's requests know the UI is mounted at /ui.
    """
    if not turns:
        return gr.DownloadButton(EXPORT_LABEL, value=None, interactive=False)
    document = conversation.export(model_id, system, turns, options)
    path = downloads.write("conversation.json", json.dumps(document, indent=2, ensure_ascii=False))
    count = len(document["messages"])
    return gr.DownloadButton(f"Export conversation ({count} message{'s' * (count != 1)}, JSON)",
                             value=path, interactive=True)


def _tool_label(turns: conversation.Turns) -> str | None:
    """The label of the tool-result box while a tool call waits for its result, else None."""
    pending = conversation.pending_tool_calls(turns)
    if not pending:
        return None
    call = pending[0]
    return f"Result of {conversation.call_name(call)} ({call.get('id') or 'tool call'})"


def wire(view: ChatView, textgen: TextGen, stops: StopButtons, *, model: gr.Dropdown,
         controls: Controls, views: ReplyViews, finished: gr.State) -> None:
    """Wire the chat view's events."""
    busy = [view.send, view.regenerate, view.clear, view.send_tool]
    # The export is part of a reply's last update: a button that followed the conversation
    # only through `turns.change` would offer the previous conversation's file for a moment.
    outputs = [view.chatbot, view.turns, view.message, view.tool_row, view.tool_result,
               view.sent_options, view.export, finished, *busy, *views.outputs()]
    inputs = {model, view.system, view.turns, view.message, view.tool_result, finished,
              view.responses_api, *controls.widgets()}

    def busy_buttons(running: bool) -> dict[Any, Any]:
        return {button: buttons(running) for button in busy}

    async def reply(data: dict[Any, Any], turns: conversation.Turns, request: gr.Request, *,
                    took_message: bool = False) -> AsyncIterator[dict[Any, Any]]:
        """Send the conversation `turns` and stream the reply into it (`took_message`: the
        message box's text is the last turn)."""
        before = data[view.turns] or []
        options = controls.options(data, forms.CHAT)
        messages = conversation.messages(data[view.system], turns)
        request_ = (forms.responses_request(data[model], messages, options)
                    if data[view.responses_api] else
                    forms.chat_request(data[model], messages, options))
        problem = readiness_problem(textgen, request_.model)
        if problem:
            raise user_error(problem, title="Model not ready")
        run = Run(textgen, request_)
        # The message box is emptied once, as the message moves into the conversation: what
        # the user types meanwhile (the next message) stays.
        taken: dict[Any, Any] = {view.message: ""} if took_message else {}
        with stops.armed(session_of(request), VIEW) as stop_event:
            async for _ in follow([run], stop_event):
                choice = run.choices[0]
                partial = conversation.assistant_turn(choice.text, choice.tool_calls)
                yield {view.chatbot: conversation.display(turns, partial), **taken,
                       **replies.live(views, run), **busy_buttons(running=not run.finished)}
                taken = {}
        choice = run.choices[0]
        if run.state == "error" and not choice.text and not choice.tool_calls:
            # Nothing came back: the conversation stays as it was, the message in its box.
            restore = {view.message: data[view.message]} if took_message else {}
            yield {view.chatbot: conversation.display(before), **restore,
                   **replies.final(views, run), **busy_buttons(running=False)}
            raise user_error(run.error or "The generation failed.", title="Generation failed")
        answer = conversation.assistant_turn(choice.text, choice.tool_calls)
        done = [*turns, answer] if (choice.text or choice.tool_calls) else turns
        label = _tool_label(done)
        yield {view.turns: done, view.chatbot: conversation.display(done), **taken,
               view.tool_row: gr.Row(visible=label is not None),
               view.tool_result: gr.Textbox(value="", label=label or "Tool result"),
               view.sent_options: options,
               view.export: export_button(data[model], data[view.system], done, options),
               finished: (data[finished] or 0) + 1,  # kept by the core: History reads it
               **replies.final(views, run), **busy_buttons(running=False)}
        if run.state == "error":
            gr.Warning(f"The reply was cut short: {run.error}", title="Generation failed")

    async def send(data: dict[Any, Any], request: gr.Request) -> AsyncIterator[dict[Any, Any]]:
        turns = list(data[view.turns] or [])
        text = data[view.message] or ""
        if text.strip():
            turns.append({"role": "user", "content": text})
        elif not turns or turns[-1].get("role") == "assistant":
            raise user_error("Type a message first.")
        async for update in reply(data, turns, request, took_message=bool(text.strip())):
            yield update

    async def regenerate(data: dict[Any, Any], request: gr.Request) -> AsyncIterator[dict[Any, Any]]:
        try:
            turns = conversation.without_last_reply(list(data[view.turns] or []))
        except ValueError as exc:
            raise user_error(str(exc)) from None
        async for update in reply(data, turns, request):
            yield update

    async def edit(data: dict[Any, Any], edited: gr.EditData,
                   request: gr.Request) -> AsyncIterator[dict[Any, Any]]:
        turns = list(data[view.turns] or [])
        value = edited.value.get("content") if isinstance(edited.value, dict) else edited.value
        bubble = edited.index if isinstance(edited.index, int) else edited.index[0]
        try:
            turns = conversation.edited(turns, conversation.turn_of(turns, bubble), str(value or ""))
        except (ValueError, IndexError) as exc:
            yield {view.chatbot: conversation.display(data[view.turns] or [])}
            raise user_error(str(exc) or "That message cannot be edited.") from None
        async for update in reply(data, turns, request):
            yield update

    async def tool(data: dict[Any, Any], request: gr.Request) -> AsyncIterator[dict[Any, Any]]:
        result = data[view.tool_result] or ""
        if not result.strip():
            raise user_error("Type what the tool returned first (any text or JSON).")
        try:
            turns = conversation.with_tool_result(list(data[view.turns] or []), result)
        except ValueError as exc:
            raise user_error(str(exc)) from None
        async for update in reply(data, turns, request):
            yield update

    def clear() -> dict[Any, Any]:
        return {view.turns: [], view.chatbot: [], view.message: "",
                view.tool_row: gr.Row(visible=False), view.export: export_button(None, "", [], {}),
                **replies.cleared(views)}

    async def press_stop(request: gr.Request) -> None:
        stops.press(session_of(request), VIEW)

    events = dict(inputs=inputs, outputs=outputs, concurrency_limit=None, show_progress="hidden")
    gr.on([view.send.click, view.message.submit], send, **events)
    gr.on([view.regenerate.click, view.chatbot.retry], regenerate, **events)
    view.chatbot.edit(edit, **events)
    view.send_tool.click(tool, **events)
    gr.on([view.clear.click, view.chatbot.clear], clear, None,
          [view.turns, view.chatbot, view.message, view.tool_row, view.export, *views.outputs()],
          queue=False)
    view.stop.click(press_stop, None, None, concurrency_limit=None)
    _wire_export(view, textgen, model, controls)


def _wire_export(view: ChatView, textgen: TextGen, model: gr.Dropdown, controls: Controls) -> None:
    """Export as JSON (messages + settings) is kept ready as the conversation changes; import
    puts a file's conversation, model and settings back."""

    # For the writers of `turns` that do not build the export themselves (import, History's
    # reopen) and for the system prompt. After a reply this writes the same few-kB file once
    # more: cheaper than every writer of `turns` knowing about the export button.
    gr.on([view.turns.change, view.system.blur], export_button,
          [model, view.system, view.turns, view.sent_options], view.export,
          show_progress="hidden", concurrency_limit=None)

    def load(path: str | None) -> dict[Any, Any]:
        if not path:
            return {}
        try:
            text = Path(path).read_text(encoding="utf-8")
            model_id, system, turns, settings = conversation.parse_import(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise user_error(str(exc), title="Import failed") from None
        out: dict[Any, Any] = {view.system: system, view.turns: turns,
                               view.chatbot: conversation.display(turns),
                               view.sent_options: settings,
                               view.tool_row: gr.Row(visible=_tool_label(turns) is not None),
                               **controls.updates(settings)}
        if model_id and any(m.id == model_id for m in textgen.list_models()):
            out[model] = model_id
        gr.Info(f"Imported {len(turns)} message(s)" + (f" for {model_id}" if model_id else "") + ".")
        return out

    view.upload.upload(load, view.upload,
                       [view.system, view.turns, view.chatbot, view.sent_options, view.tool_row,
                        model, *controls.widgets()],
                       show_progress="hidden")
