"""moto's server standing in for LocalStack on port 4566.

Serves S3, SQS and SNS (all of moto), runs the executable scripts of
/etc/localstack/init/ready.d in name order once it answers, and reports them on
`/_localstack/init/ready` in LocalStack 4's shape, `{"completed": true, "scripts": [...]}`,
with each script's state SUCCESSFUL or ERROR, so that the compose health check is the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

# LocalStack maps the access key "test" to account 000000000000, and docker-compose.yml's queue
# URL and topic ARN carry it; moto's own default account is another.
os.environ.setdefault("MOTO_ACCOUNT_ID", "000000000000")

from moto.moto_server.werkzeug_app import (  # noqa: E402  (after the account is chosen)
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server  # noqa: E402

PORT = int(os.environ.get("GATEWAY_PORT", "4566"))
READY_D = Path(os.environ.get("INIT_READY_D", "/etc/localstack/init/ready.d"))
STATUS: dict[str, Any] = {"completed": False, "scripts": []}


def app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ.get("PATH_INFO", "")
    if path in ("/_localstack/init/ready", "/_localstack/init", "/_localstack/health"):
        body = json.dumps(STATUS).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    return moto(environ, start_response)


moto = DomainDispatcherApplication(create_backend_app)


def run_init_scripts() -> None:
    url = f"http://127.0.0.1:{PORT}/_localstack/health"
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.2)
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://localhost:{PORT}"}
    scripts = sorted(p for p in READY_D.glob("*") if p.is_file()) if READY_D.is_dir() else []
    for script in scripts:
        entry = {"stage": "READY", "name": script.name, "state": "RUNNING"}
        STATUS["scripts"].append(entry)
        done = subprocess.run([str(script)], env=env, check=False)
        entry["state"] = "SUCCESSFUL" if done.returncode == 0 else "ERROR"
        print(f"standin: {script.name}: {entry['state']}", flush=True)
    STATUS["completed"] = True


def main() -> None:
    server = make_server("0.0.0.0", PORT, app, threaded=True, request_handler=MotoRequestHandler)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    threading.Thread(target=run_init_scripts, daemon=True).start()
    print(f"standin: moto on :{PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
