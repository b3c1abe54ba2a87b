"""One worker per model: a queue, micro-batches, and the budget knob under load.

Requests that share their settings (steps, sampler, guidance, scale, weak budget, a text model's
encoded text length, and either the same fixed budget or "deadline") run as one batch of at most
`max_batch_images` images. Each image starts from its own seed's noise, so what a request gets does
not depend on its batch companions. Text requests join only requests whose prompts were encoded to
the same length: no padding is added beyond what the text encoder put there, and a batch's cost is
predicted at its text length.

A request with a deadline carries a ladder of options, best first (full budget at its steps, then
lower budgets, then fewer steps at every budget; see `Ladder`). When its batch is dispatched, the
scheduler gives the batch the best option that

  * finishes before the earliest planning time of its members (arrival + (1 - headroom) x deadline), and
  * leaves the requests queued behind it enough time to meet theirs at their cheapest option
    (a look-ahead over the queue as the worker will batch it).

The choice itself is the planner's (`elit.sampling.planner.choose`: the best-ranked row whose
seconds per image fit the target). Under overload the queue grows, the look-ahead tightens and
budgets fall; when the load passes, they rise again. Work that cannot meet its deadline even at the
cheapest option is never started: `submit` refuses it from a prediction (HTTP 503 with Retry-After),
and a queued request whose deadline has become unreachable is refused when its turn comes.

Time comes from `clock` and predictions from a `CostModel`, both injected, so that the policy is
tested with a fake clock instead of timed assertions.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from elit.errors import UserError
from elit.serve.costmodel import CostModel, PlanCost, plan_cost


@dataclass(frozen=True)
class Settings:
    """What a batch must share besides its budget."""
    steps: int
    sampler: str = "euler"
    guidance: str = "none"
    scale: float | None = None
    weak_budget: int | None = None
    text_tokens: int | None = None      # a text model's encoded prompt length (its FLOPs grow with it)


@dataclass(frozen=True)
class Option:
    """One way to run a request: steps and budget, its cost, its rank (0 = the best)."""
    steps: int
    budget: int | None
    cost: PlanCost
    rank: int = 0


class Overloaded(Exception):
    """The server will not start this work (HTTP 503); `retry_after` is the predicted backlog in seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass
class Result:
    images: np.ndarray          # (n, H, W, C) uint8
    budget: int | None
    steps: int
    gflops_per_image: float
    queue_wait: float           # seconds from arrival to the start of its batch
    compute: float              # seconds of its batch
    batch_images: int


@dataclass(eq=False)
class Job:
    settings: Settings
    seeds: list
    labels: object              # class labels (a list), None, or a text job's conditions (a type with `cat`)
    options: tuple              # Option, best first; one option = a fixed budget
    arrival: float
    deadline: float | None = None    # absolute time on the scheduler's clock; None: fixed budget
    plan_by: float | None = None     # the time the scheduler plans to be done by (deadline minus headroom)
    future: Future = field(default_factory=Future)

    @property
    def images(self) -> int:
        return len(self.seeds)

    @property
    def key(self) -> tuple:
        return (self.settings, "deadline") if self.deadline is not None else (self.settings, self.options[0].budget)


def join_labels(parts: list):
    """A batch's conditions from its jobs': None, class labels (lists, concatenated) or a text job's
    encoded prompts (their own `cat`: the batch's jobs share one text length)."""
    if parts[0] is None:
        return None
    if isinstance(parts[0], list):
        return [v for p in parts for v in p]
    return type(parts[0]).cat(parts)


class Ladder:
    """The options of a request, from a model config (no weights needed)."""

    def __init__(self, config, min_steps: int | None = None):
        self.config, self.min_steps = config, min_steps
        self._cache = {}            # settings -> options; bounded, as clients choose the settings
        self.cache_size = 256

    def _plan(self, settings: Settings, steps: int, budget):
        from elit.sampling import plan_run
        return plan_run(self.config, steps=steps, sampler=settings.sampler, budget=budget,
                        guidance=settings.guidance, scale=settings.scale, weak_budget=settings.weak_budget)

    def _cost(self, settings: Settings, plan) -> PlanCost:
        from elit.cost import with_text_tokens
        return plan_cost(with_text_tokens(self.config, settings.text_tokens), plan)

    def plan(self, settings: Settings, option: Option):
        return self._plan(settings, option.steps, option.budget)

    def fixed(self, settings: Settings, budget) -> tuple:
        """One option at `budget`; UserError if the settings do not fit the model."""
        plan = self._plan(settings, settings.steps, budget)
        return (Option(settings.steps, plan.budgets[0], self._cost(settings, plan)),)

    def steps_ladder(self, steps: int) -> list[int]:
        """The requested steps, then 3/4, 1/2 and 1/4 of them, never below `min_steps`."""
        floor = steps if self.min_steps is None else min(steps, self.min_steps)
        ladder = [steps] + [max(floor, round(steps * f)) for f in (0.75, 0.5, 0.25)]
        return sorted(set(ladder), reverse=True)

    def elastic(self, settings: Settings) -> tuple:
        """Every (steps, budget) the model can run these settings at, best first: fewer steps only
        once every budget at more steps is exhausted."""
        if settings in self._cache:
            return self._cache[settings]
        options = []
        for steps in self.steps_ladder(settings.steps):
            for budget in list(reversed(self.config.budget_space.budgets)) or [None]:   # None: a plain model
                try:
                    plan = self._plan(settings, steps, budget)
                except UserError:
                    continue   # e.g. autoguidance at the weak budget itself
                options.append(Option(steps, budget, self._cost(settings, plan), rank=len(options)))
        if not options:
            raise UserError("no budget of this model can run these settings")
        if len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))      # the oldest entry
        self._cache[settings] = tuple(options)
        return self._cache[settings]


class Scheduler:
    def __init__(self, cost: CostModel, run_batch, *, max_batch_images: int = 16, max_queue_images: int = 256,
                 headroom: float = 0.15, clock=time.monotonic, on_batch=None, history: int = 200):
        """run_batch(settings, option, seeds, labels) -> (n, H, W, C) uint8 images.
        on_batch(jobs, option, queue_wait_of_each, compute) is called after every batch (metrics)."""
        if not 0 <= headroom < 1:
            raise UserError(f"headroom must lie in [0, 1), got {headroom}")
        self.cost, self.run_batch, self.clock, self.on_batch = cost, run_batch, clock, on_batch
        self.max_batch_images, self.max_queue_images, self.headroom = max_batch_images, max_queue_images, headroom
        self.queue: list[Job] = []
        self.running: tuple | None = None      # (images, option, predicted end)
        self.recent = collections.deque(maxlen=history)   # (time, budget, steps, images) per batch
        self.batches = self.images_done = 0
        self._cond = threading.Condition()
        self._thread = None
        self._stopping = False
        self.error: BaseException | None = None     # set if the worker thread died

    # ------------------------------------------------------------------ requests
    def new_job(self, settings, seeds, labels, options, deadline_ms: float | None = None,
                arrival: float | None = None) -> Job:
        """`arrival`: when the request came (default now), so work done before queueing it (encoding a
        prompt) counts against its deadline."""
        now = self.clock() if arrival is None else arrival
        job = Job(settings, list(seeds), labels, tuple(options), arrival=now)
        if deadline_ms is not None:
            job.deadline = now + deadline_ms / 1000
            job.plan_by = now + (1 - self.headroom) * deadline_ms / 1000
        return job

    def submit(self, job: Job) -> Future:
        """Queue `job`, or raise Overloaded if the queue is full or its deadline is out of reach."""
        if job.images > self.max_batch_images:
            raise UserError(f"{job.images} images exceed the batch cap {self.max_batch_images}")
        with self._cond:
            now = self.clock()
            queued = sum(j.images for j in self.queue)
            if queued + job.images > self.max_queue_images:
                raise Overloaded(f"the queue is full ({queued} images waiting, cap {self.max_queue_images})",
                                 self._drain_time(now))
            if job.deadline is not None:
                finish = self._simulate(self.queue + [job], self._free_at(now))[job]
                if finish > job.plan_by:
                    raise Overloaded(f"the deadline cannot be met even at the lowest budget: predicted "
                                     f"{1000 * (finish - now):.0f} ms (queue wait included) for "
                                     f"{1000 * (job.plan_by - now):.0f} ms of planning time",
                                     self._drain_time(now))
            self.queue.append(job)
            self._cond.notify()
        return job.future

    # ------------------------------------------------------------------ predictions
    def _cheapest(self, job: Job, images: int) -> tuple[Option, float]:
        return min(((o, self.cost.seconds(o.cost, images)) for o in job.options), key=lambda p: p[1])

    def _batch_of(self, queue: list[Job]) -> list[Job]:
        """The jobs the worker batches with the queue's head (FIFO, same key, within the cap)."""
        head, batch, images = queue[0], [], 0
        for job in queue:
            if job.key == head.key and images + job.images <= self.max_batch_images:
                batch.append(job)
                images += job.images
        return batch

    def _simulate(self, queue: list[Job], start: float) -> dict:
        """Finish time of every job if the worker ran the queue from `start` at each batch's cheapest option."""
        finish, queue, t = {}, list(queue), start
        while queue:
            batch = self._batch_of(queue)
            t += self._cheapest(batch[0], sum(j.images for j in batch))[1]
            for job in batch:
                finish[job] = t
                queue.remove(job)
        return finish

    def _free_at(self, now: float) -> float:
        return max(now, self.running[2]) if self.running else now

    def _drain_time(self, now: float) -> float:
        finish = self._simulate(self.queue, self._free_at(now))
        return max(finish.values(), default=self._free_at(now)) - now

    def predicted_wait(self) -> float:
        """Seconds a request arriving now would wait before its batch starts (queue at cheapest options)."""
        with self._cond:
            return self._drain_time(self.clock())

    # ------------------------------------------------------------------ dispatch
    def _choose(self, batch: list[Job], images: int, target: float) -> Option:
        """The planner's choice: the best-ranked option whose predicted time fits `target` seconds."""
        from elit.sampling.planner import choose
        options = batch[0].options
        cheapest = self._cheapest(batch[0], images)[0]
        if target <= 0:
            return cheapest
        rows = [{"steps": o.steps, "budget": o.budget, "guidance": batch[0].settings.guidance,
                 "gflops_per_image": o.cost.gflops_per_image,
                 "seconds_per_image": self.cost.seconds(o.cost, images) / images,
                 "metric": "ladder_rank", "value": o.rank, "lower_is_better": True, "option": o} for o in options]
        try:
            return choose(rows, target_seconds=target / images)["option"]
        except UserError:    # nothing fits the target: the cheapest still meets the batch's own deadlines
            return cheapest

    def _next_batch(self, now: float):
        """(batch, option, refused): the next batch and how to run it; jobs that cannot make it are refused."""
        head = self.queue[0]
        same = [j for j in self.queue if j.key == head.key]
        if head.deadline is None:
            return self._batch_of(self.queue), head.options[0], []
        refused, alive = [], []
        for job in same:
            (alive if now + self._cheapest(job, job.images)[1] <= job.deadline else refused).append(job)
        batch, images = [], 0
        for job in sorted(alive, key=lambda j: j.deadline):   # earliest deadline first
            n = images + job.images
            fits = n <= self.max_batch_images and now + self._cheapest(job, n)[1] <= min(
                [j.plan_by for j in batch] + [job.plan_by])
            if fits or not batch:
                batch.append(job)
                images = n
        if not batch:
            return [], None, refused
        limit = min(j.plan_by for j in batch)
        low_end = now + self._cheapest(batch[0], images)[1]
        rest = [j for j in self.queue if j not in batch and j not in refused]
        for job, finish in self._simulate(rest, low_end).items():
            slack = job.plan_by - finish if job.deadline is not None else -1
            if slack >= 0:          # it makes its deadline if this batch runs cheap: keep it that way
                limit = min(limit, low_end + slack)
        return batch, self._choose(batch, images, limit - now), refused

    def step(self) -> bool:
        """Run the next batch (the worker thread calls this in a loop). False if the queue was empty."""
        with self._cond:
            if not self.queue:
                return False
            now = self.clock()
            batch, option, refused = self._next_batch(now)
            for job in batch + refused:
                self.queue.remove(job)
            images = sum(j.images for j in batch)
            if batch:
                self.running = (images, option, now + self.cost.seconds(option.cost, images))
        for job in refused:
            job.future.set_exception(Overloaded(
                f"the deadline can no longer be met even at the lowest budget (waited "
                f"{1000 * (now - job.arrival):.0f} ms)", self.predicted_wait()))
        if not batch:
            return True
        seeds = [s for j in batch for s in j.seeds]
        labels = join_labels([j.labels for j in batch])
        try:
            pixels = self.run_batch(batch[0].settings, option, seeds, labels)
        except BaseException as e:
            for job in batch:
                job.future.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return True
        finally:
            with self._cond:
                self.running = None
        end = self.clock()
        compute = end - now
        self.cost.observe(option.cost, images, compute)
        waits = [now - j.arrival for j in batch]
        with self._cond:
            self.batches += 1
            self.images_done += images
            self.recent.append((end, option.budget, option.steps, images))
        if self.on_batch is not None:
            self.on_batch(batch, option, waits, compute)
        offset = 0
        for job, wait in zip(batch, waits):
            job.future.set_result(Result(pixels[offset:offset + job.images], option.budget, option.steps,
                                         option.cost.gflops_per_image, wait, compute, images))
            offset += job.images
        return True

    # ------------------------------------------------------------------ the worker thread
    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="elit-serve-worker", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self.queue and not self._stopping:
                        self._cond.wait()
                    if self._stopping:
                        return
                self.step()
        except BaseException as e:   # a bug: /healthz reports it instead of hanging every request
            self.error = e
            raise

    def healthy(self) -> bool:
        """No worker error, and the worker thread (if started) still runs."""
        return self.error is None and (self._thread is None or self._thread.is_alive())

    def stop(self, timeout: float = 30) -> None:
        with self._cond:
            self._stopping = True
            pending, self.queue = self.queue, []
            self._cond.notify_all()
        for job in pending:
            job.future.set_exception(Overloaded("the server is shutting down", 5))
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def status(self) -> dict:
        with self._cond:
            now = self.clock()
            running = None if self.running is None else {
                "images": self.running[0], "budget": self.running[1].budget, "steps": self.running[1].steps,
                "ends_in_s": round(max(0.0, self.running[2] - now), 4)}
            return {"queued_requests": len(self.queue), "queued_images": sum(j.images for j in self.queue),
                    "predicted_wait_s": round(self._drain_time(now), 4), "running": running,
                    "batches": self.batches, "images": self.images_done,
                    "recent": [{"age_s": round(now - t, 3), "budget": b, "steps": s, "images": n}
                               for t, b, s, n in list(self.recent)[-20:]],
                    "cost_model": self.cost.to_dict()}
