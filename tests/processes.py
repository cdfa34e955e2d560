"""Stopping the servers the tests start (webserver, daemon, code servers) in their own process group."""

import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``), SIGKILL
    it if it has not exited after ``timeout`` seconds, and reap it."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
