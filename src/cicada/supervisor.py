"""``--workers N``: the parent process binds once and keeps N spawned worker processes serving the
shared socket. It restarts a worker that dies (or exits after --limit-max-requests), drains on
SIGTERM/SIGINT (forward SIGTERM, wait up to --timeout-graceful-shutdown, then SIGKILL), rolls
workers one at a time on SIGHUP (start the new one, wait until it is ready, then stop the old),
adds/removes a worker on SIGTTIN/SIGTTOU, and kills and replaces a worker that stops answering
health checks for --timeout-worker-healthcheck seconds (a frozen process, not a busy one).

The parent never imports the app and never runs an event loop.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from socket import socket
from types import FrameType

from cicada.config import STARTUP_FAILURE, Config
from cicada.logging_config import style
from cicada.process import WorkerProcess

SIGNAL_NAMES = {
    signal.SIGINT: "INT",
    signal.SIGTERM: "TERM",
    signal.SIGHUP: "HUP",
    signal.SIGTTIN: "TTIN",
    signal.SIGTTOU: "TTOU",
}

# How long a replacement worker may take to become ready during a SIGHUP roll.
ROLL_READY_TIMEOUT = 60.0
# Extra time, beyond the graceful-shutdown timeout, before a stopping worker is killed.
KILL_GRACE = 5.0
# A worker dying sooner than this after its start counts as a crash loop (restart backoff).
CRASH_WINDOW = 1.0
# Seconds between health checks of a worker (each must be answered within the timeout).
HEALTHCHECK_INTERVAL = 1.0

logger = logging.getLogger("cicada.error")


class Supervisor:
    def __init__(self, config: Config, sockets: list[socket]) -> None:
        self.config = config
        self.sockets = sockets
        self.target_workers = config.workers
        self.workers: list[WorkerProcess] = []
        self.retiring: list[WorkerProcess] = []
        self.signal_queue: list[int] = []
        self.should_exit = False
        self.force = False
        self.exit_code = 0
        self.quick_deaths = 0

    # -- signal plumbing ------------------------------------------------------------------
    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signal_queue.append(sig)

    def _install_signals(self) -> dict[int, object]:
        return {sig: signal.signal(sig, self._on_signal) for sig in SIGNAL_NAMES}

    def handle_signals(self) -> None:
        while self.signal_queue:
            sig = self.signal_queue.pop(0)
            name = SIGNAL_NAMES.get(sig, str(sig))
            getattr(self, f"handle_{name.lower()}")()

    def handle_int(self) -> None:
        if self.should_exit:
            logger.info("Received SIGINT again, forcing workers to quit.")
            self.force = True
            for w in self.workers + self.retiring:
                w.send_signal(signal.SIGINT)
            return
        logger.info("Received SIGINT, exiting.")
        self.should_exit = True

    def handle_term(self) -> None:
        if self.should_exit:
            return
        logger.info("Received SIGTERM, exiting.")
        self.should_exit = True

    def handle_hup(self) -> None:
        if self.should_exit:
            return
        logger.info("Received SIGHUP, restarting processes.")
        self.roll_workers()

    def handle_ttin(self) -> None:
        if self.should_exit:
            return
        logger.info("Received SIGTTIN, increasing the number of processes.")
        self.target_workers += 1
        self.workers.append(self._spawn())

    def handle_ttou(self) -> None:
        if self.should_exit:
            return
        logger.info("Received SIGTTOU, decreasing number of processes.")
        if self.target_workers <= 1:
            logger.info("Already reached one process, cannot decrease the number of processes anymore.")
            return
        self.target_workers -= 1
        worker = self.workers.pop()
        worker.terminate()
        self.retiring.append(worker)

    # -- workers --------------------------------------------------------------------------
    def _spawn(self) -> WorkerProcess:
        worker = WorkerProcess(self.config, self.sockets)
        worker.start()
        logger.info("Started child process [%s]", worker.pid)
        return worker

    def _stop_deadline(self) -> float | None:
        t = self.config.timeout_graceful_shutdown
        return None if t is None else t + KILL_GRACE

    def reap(self) -> None:
        """Collect exited workers: replace unexpected exits, finish retiring ones."""
        now = time.monotonic()
        deadline = self._stop_deadline()
        for worker in list(self.retiring):
            if not worker.is_alive():
                worker.join()
                worker.close()
                self.retiring.remove(worker)
                logger.info("Child process [%s] stopped (exit code %s)", worker.pid, worker.exitcode)
            elif deadline is not None and worker.stopping_since is not None and now - worker.stopping_since > deadline:
                logger.error("Child process [%s] did not stop within %.1f s; killing it.", worker.pid, deadline)
                worker.kill()
        for worker in list(self.workers):
            worker.poll_ready()
            if worker.is_alive():
                self._check_health(worker)
                continue
            worker.join()
            worker.close()
            code = worker.exitcode
            if code != 0 and not worker.ready and not worker.unhealthy:
                # It never served: the app (import, syntax error), its lifespan or the socket is
                # broken, and a restart would fail the same way. (One frozen while starting was
                # killed for it, and is replaced.)
                logger.error("Child process [%s] failed to start (exit code %s), stopping the parent process.",
                             worker.pid, code)
                self.workers.remove(worker)
                self.exit_code = STARTUP_FAILURE
                self.should_exit = True
                return
            if code == 0:
                logger.info("Child process [%s] exited (request limit reached); starting a replacement.", worker.pid)
            else:
                logger.warning("Child process [%s] died (exit code %s); starting a replacement.", worker.pid, code)
            if self.should_exit:
                self.workers.remove(worker)
                continue
            lived = time.monotonic() - worker.started_at
            if lived < CRASH_WINDOW:
                # Dying right after start: back off so a crashing app can't spin the CPU.
                self.quick_deaths += 1
                delay = min(0.1 * (2 ** self.quick_deaths), 5.0)
                logger.warning("Child process [%s] lived only %.1f s; waiting %.1f s before restarting.",
                               worker.pid, lived, delay)
                time.sleep(delay)
            else:
                self.quick_deaths = 0
            self.workers[self.workers.index(worker)] = self._spawn()

    def _check_health(self, worker: WorkerProcess) -> None:
        timeout = self.config.timeout_worker_healthcheck
        if not worker.answering or worker.stopping_since is not None or timeout <= 0:
            return
        if not worker.check_health(timeout, min(HEALTHCHECK_INTERVAL, timeout)):
            logger.error(
                "Child process [%s] did not answer a health check within %.1f s; killing it.",
                worker.pid, timeout,
            )
            worker.unhealthy = True
            worker.kill()

    def roll_workers(self) -> None:
        """Replace every worker one at a time, the new one serving before the old one stops."""
        for old in list(self.workers):
            if self.should_exit or old not in self.workers:
                return
            new = self._spawn()
            ok = new.wait_ready(ROLL_READY_TIMEOUT, abort=self._abort_roll)
            if not ok:
                new.terminate()
                self.retiring.append(new)
                if not self.should_exit:
                    logger.error(
                        "New child process [%s] was not ready in time; keeping worker [%s] and "
                        "aborting the restart.", new.pid, old.pid,
                    )
                return
            self.workers[self.workers.index(old)] = new
            old.terminate()
            self.retiring.append(old)
        logger.info("All child processes restarted.")

    def _abort_roll(self) -> bool:
        # Let SIGTERM/SIGINT interrupt a roll; other signals wait until it is done.
        for sig in self.signal_queue:
            if sig in (signal.SIGINT, signal.SIGTERM):
                return True
        return False

    # -- lifecycle ------------------------------------------------------------------------
    def run(self) -> int:
        pid = os.getpid()
        logger.info(
            "Started parent process [%d]",
            pid,
            extra={"color_message": "Started parent process [" + style("%d", fg="cyan", bold=True) + "]"},
        )
        original = self._install_signals()
        try:
            for _ in range(self.target_workers):
                self.workers.append(self._spawn())
            while not self.should_exit:
                self.handle_signals()
                if self.should_exit:
                    break
                self.reap()
                time.sleep(0.1)
            self.drain()
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
            for sock in self.sockets:
                sock.close()
        logger.info(
            "Stopping parent process [%d]",
            pid,
            extra={"color_message": "Stopping parent process [" + style("%d", fg="cyan", bold=True) + "]"},
        )
        return self.exit_code

    def drain(self) -> None:
        everyone = self.workers + self.retiring
        for worker in everyone:
            worker.terminate()
        deadline = self._stop_deadline()
        start = time.monotonic()
        for worker in everyone:
            logger.info("Waiting for child process [%s]", worker.pid)
            while worker.is_alive():
                self.handle_signals()  # a second SIGINT forwards SIGINT (force)
                if deadline is not None and time.monotonic() - start > deadline:
                    logger.error("Child process [%s] did not stop within %.1f s; killing it.", worker.pid, deadline)
                    worker.kill()
                    worker.join()
                    break
                worker.join(0.1)
            worker.close()
        self.workers = []
        self.retiring = []
