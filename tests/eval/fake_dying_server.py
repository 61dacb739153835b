"""TEST-ONLY fake OpenAI endpoint that dies abruptly after N chat completions.

A real vLLM server cannot be made to die mid-run on demand; this reproduces exactly that fault
(process gone, port closed) for the "server killed mid-run" test. Nor can it be made to refuse one
given request: the optional REFUSE (comma-separated 1-based request numbers) answers those with
HTTP 400 and vLLM's error JSON. The reply text is "reply K", or $FAKE_REPLY when set.
Usage: python fake_dying_server.py PORT N [REFUSE]
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, LIMIT = int(sys.argv[1]), int(sys.argv[2])
REFUSE = {int(x) for x in sys.argv[3].split(",")} if len(sys.argv) > 3 and sys.argv[3] else set()
REPLY = os.environ.get("FAKE_REPLY")
served = 0
requests = 0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _json(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":  # as vLLM: readiness probe
            self._json({})
        elif self.path.rstrip("/") == "/v1/models":
            self._json({"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "test"}]})
        else:
            self.send_error(404)

    def do_POST(self):
        global served, requests
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        requests += 1
        if requests in REFUSE:  # as vLLM answers a prompt longer than max_model_len
            self._json({"object": "error", "message": f"request {requests}: prompt is too long", "type":
                        "BadRequestError", "param": None, "code": 400}, status=400)
            return
        if served >= LIMIT:
            os._exit(1)  # killed mid-run: no answer, port closed from now on
        served += 1
        self._json({"id": f"c{served}", "object": "chat.completion", "created": 0, "model": "tiny",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": REPLY or f"reply {served}"}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
