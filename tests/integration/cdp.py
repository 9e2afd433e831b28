"""Headless Chromium driven through the DevTools protocol over a pipe
(--remote-debugging-pipe: commands on the browser's fd 3, answers and
events on its fd 4, each a JSON text ended by a NUL byte), so a test can
wait on what a page shows in real time and take a screenshot when it
wants.  Python standard library only."""
import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

CHROMIUM = os.environ.get("VGPU_CHROMIUM", "/usr/bin/chromium")


class Browser:
    def __init__(self, width=1200, height=800):
        self.profile = tempfile.mkdtemp(prefix="vgpu-chromium-")
        cmd_r, self.cmd_w = os.pipe()
        self.res_r, res_w = os.pipe()

        def fds():
            # Onto fds 3 and 4 by way of fds >= 10, so neither overwrites the other.
            a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={self.profile}", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--hide-scrollbars", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=fds, start_new_session=True)
        os.close(cmd_r)
        os.close(res_w)
        self.next_id = 0
        self.answers = {}
        self.events = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read(self):
        buf = b""
        while True:
            chunk = os.read(self.res_r, 1 << 16)
            if not chunk:
                break
            buf += chunk
            *msgs, buf = buf.split(b"\0")
            with self.cond:
                for m in msgs:
                    msg = json.loads(m)
                    if "id" in msg:
                        self.answers[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def call(self, method, session=False, timeout=60, **params):
        with self.cond:
            self.next_id += 1
            i = self.next_id
        msg = {"id": i, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        with self.cond:
            while i not in self.answers:
                left = end - time.monotonic()
                if left <= 0 or not self.reader.is_alive():
                    raise AssertionError(f"chromium did not answer {method}")
                self.cond.wait(left)
            answer = self.answers.pop(i)
        if "error" in answer:
            raise AssertionError(f"chromium: {method}: {answer['error']}")
        return answer["result"]

    def navigate(self, url):
        r = self.call("Page.navigate", session=True, url=url)
        if r.get("errorText"):
            raise AssertionError(f"chromium could not load {url}: {r['errorText']}")

    def eval(self, expression):
        r = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def dom(self):
        return self.eval("document.documentElement.outerHTML")

    def problems(self):
        """What the page reported as wrong: uncaught exceptions, console
        errors and the browser's own errors (a CSP violation among them),
        except failed loads, which a test provokes on purpose."""
        out = []
        with self.cond:
            events = list(self.events)
        for e in events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                out.append(json.dumps(p.get("exceptionDetails"))[:500])
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append(json.dumps(p.get("args"))[:500])
            elif e.get("method") == "Log.entryAdded":
                entry = p.get("entry", {})
                if entry.get("level") == "error" and entry.get("source") != "network":
                    out.append(f"{entry.get('source')}: {entry.get('text')}")
        return out

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self):
        try:
            if self.proc.poll() is None:
                self.call("Browser.close", timeout=10)
                self.proc.wait(timeout=20)
        except (AssertionError, OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        os.close(self.cmd_w)
        self.reader.join(10)
        os.close(self.res_r)
        shutil.rmtree(self.profile, ignore_errors=True)
