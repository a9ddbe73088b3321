"""Stylizing a photo library on a Ray cluster, with the local pipeline's guarantees.

``fastnst stylize ... --ray [ADDRESS]`` runs ``stylize_with_ray``: the driver
plans the run exactly as the local pipeline does (``fastnst.stylize.pipeline.plan``:
the same inputs, output paths, refused inputs and report path), hands the jobs to
Ray Data as a dataset of path strings, and a pool of actors stylizes them. Each
actor loads the model once and runs ``fastnst.stylize.photo.stylize_job`` on every
photo it gets: decode, stylize, atomic write, skip an output that exists. So the
outputs are the local pipeline's, byte for byte, wherever they are computed (on
the CPU, where photos run one per pass), and only paths and report lines travel
through Ray's object store, never pixels.

Dataset columns (``stylize_dataset``): in, ``source`` and ``target``, each a path
as ``str`` or ``bytes`` (``os.fsencode``: file names that are not valid UTF-8, as
old cameras write them, cannot be Arrow strings); out, one row per input row,
``status`` (``done``, ``skipped`` or ``failed``) and ``record`` (its report line,
``Record.to_json()``).

Layout (``cluster_layout``): without GPUs one actor per node by default, reserving
as many CPUs as the smallest node has and running that many photos at once on its
threads (OpenVINO throughput streams; one photo on all cores with torch), so each
node holds one model copy. With GPUs (``--device auto|cuda`` and a torch or auto
backend), one actor per GPU, batching photos of equal size. ``--ray-actors N``
sets the count. Every node must see the model, the inputs and the output folder
at the same paths (a shared file system) and have fastnst installed.

Faults: an actor killed mid-run (a preempted node, the OOM killer) is restarted
and its batch retried (``ACTOR_RESTARTS``, ``TASK_RETRIES``); what it had written
is complete (atomic renames) and is skipped on the retry, and temporaries it left
are removed at the end of the run. A bad photo is one failed row, never a failed
task. A driver interrupted and run again resumes by skipping finished outputs.

Inputs beyond local disks: paths stay strings from the plan to the report, and
only ``stylize_job`` (through ``fastnst.stylize.photo``) opens, checks and writes
files. URIs (``s3://``, ``gs://``) would need one seam there: open a source with
``pyarrow.fs.FileSystem.from_uri(uri)`` (or fsspec) and decode the stream, test a
target's existence with ``get_file_info``, and write a target as one object upload
(an object store's put is atomic, so no temporary and rename), with discovery
listing a prefix through ``pyarrow.fs.FileSelector``. This module would not change.

Ray is imported only here, and only when a function runs: ``pip install fastnst[ray]``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fastnst.device import cpu_count
from fastnst.errors import ConfigError, FastNSTError, first_line
from fastnst.images import stack_pixels
from fastnst.stylize.config import DEFAULT_GPU_BATCH, StylizeConfig
from fastnst.stylize.inputs import Job, prepare_output_dir, remove_temporaries
from fastnst.stylize.photo import Record, failure_reason, finish, prepare, stylize_job
from fastnst.stylize.pipeline import StylizeReport, open_report, plan, tally

log = logging.getLogger(__name__)

# An actor comes back after its process died (node lost, OOM killer) this many times ...
ACTOR_RESTARTS = 8
# ... and a batch is retried this many times; a batch that kills every worker it meets (a photo
# that crashes the decoder or exhausts memory) then stops the run instead of looping forever.
TASK_RETRIES = 3
# Photos per Ray batch: per stream (CPU) or per network batch (GPU). Larger batches cost less
# scheduling; smaller ones lose less work to a killed actor and leave fewer threads idle at the end.
ROWS_PER_SLOT = 4


def _ray():
    """The ``ray`` package with Ray Data, or a one-line ``ConfigError`` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - ray[data], not bare ray: Ray Data's own dependencies load here
    except ImportError as exc:
        raise ConfigError(f"--ray needs Ray Data ({first_line(exc)}): pip install 'fastnst[ray]'") from None
    return ray


@dataclass(frozen=True)
class Layout:
    """How a run uses the cluster: ``actors`` model copies, each reserving ``cpus`` CPUs and ``gpus`` GPUs and
    taking ``rows`` photos per Ray batch."""

    actors: int
    cpus: int
    gpus: float
    rows: int


def plan_layout(nodes: list[tuple[float, float]], config: StylizeConfig, actors: int | None = None) -> Layout:
    """The layout for a cluster whose alive nodes have ``(CPUs, GPUs)`` each (see the module docstring)."""
    if actors is not None and actors < 1:
        raise ConfigError(f"--ray-actors must be at least 1, got {actors}")
    cpus = [int(c) for c, _ in nodes if c >= 1]
    gpus = sum(g for _, g in nodes)
    if not cpus:
        raise FastNSTError("the Ray cluster has no node with a CPU to run on; add a worker node (ray start)")
    if _on_gpus(config, gpus):
        count = actors or max(1, int(gpus))
        batch = config.batch_size or DEFAULT_GPU_BATCH
        return Layout(count, min(config.workers, min(cpus)), min(1.0, gpus / count), ROWS_PER_SLOT * batch)
    if actors is None:
        per_actor = min(cpus)
        count = sum(c // per_actor for c in cpus)
    else:
        per_actor = max(1, min(max(cpus), sum(cpus) // actors))
        count = actors
    return Layout(count, per_actor, 0.0, ROWS_PER_SLOT * per_actor)


def _on_gpus(config: StylizeConfig, gpus: float) -> bool:
    """Whether the run's actors take GPUs: asked for (or ``auto``) with a backend that runs on them."""
    wants = config.device == "auto" or config.device.startswith("cuda")
    if config.device.startswith("cuda") and gpus <= 0:
        raise ConfigError(f"--device {config.device}, but the Ray cluster has no GPU; use --device cpu or auto")
    return wants and gpus > 0 and config.backend in ("auto", "torch")


def cluster_layout(config: StylizeConfig, actors: int | None = None) -> Layout:
    """``plan_layout`` for the connected Ray cluster's alive nodes."""
    ray = _ray()
    nodes = [(n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0)) for n in ray.nodes() if n["Alive"]]
    layout = plan_layout(nodes, config, actors)
    log.info("Ray: %d actor(s), %d CPU(s) and %g GPU(s) each, %d photos per batch",
             layout.actors, layout.cpus, layout.gpus, layout.rows)
    return layout


class PhotoWorker:
    """One Ray actor: the model loaded once; a batch of jobs (Arrow: ``source``, ``target``) in, report rows out.

    CPU: the photos run ``streams`` at a time on this actor's threads, each through
    ``stylize_job``. GPU (or ``--batch-size`` > 1): photos of equal size are
    stacked into (B, H, W, 3) uint8 batches for one pass, decoded and encoded on
    ``config.workers`` threads.
    """

    def __init__(self, config: StylizeConfig, output_dir: str, cpus: int) -> None:
        from fastnst.stylize import Stylizer

        try:
            self.stylizer = Stylizer.from_config(config)
        except FastNSTError as exc:  # a plain FastNSTError travels back to the driver whole (subclasses do not)
            raise FastNSTError(str(exc)) from None
        self.config, self.output_dir = config, Path(output_dir)
        self.batch = config.batch_size or self.stylizer.default_batch_size
        self.streams = self.stylizer.stream_count(config.streams, most=cpus) if self.batch == 1 else 1
        self.stylizer.backend.set_streams(self.streams)
        # Streams: each thread runs whole photos. Batches: the threads decode and encode around the passes.
        self.pool = ThreadPoolExecutor(self.streams if self.batch == 1 else config.workers, "fastnst-ray")

    def __call__(self, batch):
        import pyarrow as pa

        jobs = [Job(Path(os.fsdecode(s)), Path(os.fsdecode(t)))
                for s, t in zip(batch.column("source").to_pylist(), batch.column("target").to_pylist())]
        if self.batch > 1:
            records = self._batched(jobs)
        else:
            records = list(self.pool.map(self._one, jobs))
        return pa.table({"status": [r.status for r in records], "record": [r.to_json() for r in records]})

    def _one(self, job: Job) -> Record:
        return stylize_job(job, self.stylizer, self.config, self.output_dir)

    def _batched(self, jobs: list[Job]) -> list[Record]:
        """Decode on threads, stylize equal sizes ``self.batch`` at a time, encode on threads; one record per job."""
        records: dict[int, Record] = {}
        groups: dict[tuple[int, int], list] = {}
        for i, (job, pixels) in enumerate(zip(jobs, self.pool.map(lambda job: prepare(job, self.config), jobs))):
            if isinstance(pixels, Record):
                records[i] = pixels
            else:
                groups.setdefault(pixels.shape[:2], []).append((i, job, pixels))
        for members in groups.values():
            for start in range(0, len(members), self.batch):
                records.update(self._pass(members[start:start + self.batch]))
        return [records[i] for i in range(len(jobs))]

    def _pass(self, members: list) -> dict[int, Record]:
        """One forward pass over photos of one size, then their writes: index → record."""
        height, width = members[0][2].shape[:2]
        try:
            styled = self.stylizer.stylize_pixels(stack_pixels([m[2] for m in members]))  # (B, H, W, 3) uint8
        except (RuntimeError, MemoryError, FastNSTError) as exc:  # e.g. out of GPU memory: lose this batch only
            return {i: Record(str(job.source), None, "failed", failure_reason(exc, "computing", job))
                    for i, job, _ in members}
        tiles = self.stylizer.tiles(height, width)
        records = self.pool.map(lambda item: finish(*item, self.config, self.output_dir, tiles),
                                [(job, array) for (_, job, _), array in zip(members, styled)])
        return dict(zip((i for i, _, _ in members), records))


def jobs_dataset(jobs: list[Job]):
    """A Ray dataset of ``jobs``: columns ``source`` and ``target``, paths as bytes (any file name survives)."""
    ray = _ray()
    return ray.data.from_items([{"source": os.fsencode(j.source), "target": os.fsencode(j.target)} for j in jobs])


def stylize_dataset(dataset, config: StylizeConfig, *, actors: int | None = None, layout: Layout | None = None):
    """Stylize a Ray dataset of photos (columns ``source``, ``target``); a lazy dataset of ``status``, ``record``.

    Every ``target`` must lie inside ``config.output_dir`` (another is a failed row);
    ``config.inputs`` is not read. The input's rows (paths only) are computed here,
    before any actor takes the CPUs its stages need; the photos are stylized when
    the result is consumed (``iter_rows``, ``write_json``, ``materialize``). Ray must
    be initialised.
    """
    ray = _ray()
    names = dataset.columns() or []
    missing = [c for c in ("source", "target") if c not in names]
    if missing:
        raise ConfigError(f"the dataset lacks column(s) {', '.join(missing)} (it has {', '.join(names) or 'none'}); "
                          "give each row a source photo path and a target output path")
    layout = layout or cluster_layout(config, actors)
    output_dir = prepare_output_dir(config.output_dir)
    if set(names) != {"source", "target"}:
        dataset = dataset.select_columns(["source", "target"])
    if not isinstance(dataset, ray.data.dataset.MaterializedDataset):
        # Upstream stages run now, while no actor holds the CPUs their tasks need (else a deadlock).
        dataset = dataset.materialize()
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=layout.actors, initial_size=layout.actors)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates passing actor options through map_batches' **kwargs without a replacement yet.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*", category=DeprecationWarning)
        return dataset.map_batches(
            PhotoWorker, batch_size=layout.rows, batch_format="pyarrow", compute=pool,
            fn_constructor_kwargs={"config": config, "output_dir": str(output_dir), "cpus": layout.cpus},
            num_cpus=layout.cpus, num_gpus=layout.gpus or None,
            max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES)


def records(dataset):
    """The ``Record`` of each row of a dataset from ``stylize_dataset``, as rows arrive (completion order)."""
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for line in batch.column("record").to_pylist():
            yield Record(**json.loads(line))


def stylize_with_ray(config: StylizeConfig, address: str | None = None, *, actors: int | None = None) -> StylizeReport:
    """``stylize_files(config)`` on a Ray cluster: ``address`` None starts a local one, ``auto`` joins the running
    one, else ``ray://host:10001`` or ``host:6379``. Stops Ray at the end only if it started it here.

    The same outputs, report (one line per input, in completion order) and counts
    as the local pipeline. Raises ``FastNSTError`` if the output folder cannot be
    written, the cluster cannot be reached, the model cannot be loaded, or a batch
    of photos killed its worker ``TASK_RETRIES`` + 1 times (finished outputs are kept).
    """
    ray = _ray()
    with plan(config) as job, open_report(job.report_path) as lines:
        report = StylizeReport(report_path=job.report_path)
        for source, reason in job.failures:
            _count(report, lines, Record(source, None, "failed", reason))
        if job.jobs:
            _check_model(config.model)
            handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            started = _connect(ray, address)
            try:
                for record in _run(stylize_dataset(jobs_dataset(job.jobs), config, actors=actors)):
                    _count(report, lines, record)
            finally:
                if started:
                    ray.shutdown()
                    _restore(handlers)
        removed = remove_temporaries(job.output_dir, job.shard)  # the output folder is still locked: ours alone
        if removed:
            log.info("removed %d half-written file(s) left by a worker that was killed", removed)
    return report


def _count(report: StylizeReport, lines, record: Record) -> None:
    tally(report, record)
    if lines is not None:
        lines.write(record)


def _check_model(model: str) -> None:
    """Read the model file's header here, so that a missing or broken model is one line before any cluster starts
    (the actors load it whole; what fails only there comes back as their one line too)."""
    from fastnst.checkpoint import check_model_path, read_info

    if Path(model).suffix.lower() == ".safetensors":
        read_info(model)
    else:
        check_model_path(Path(model))


def _connect(ray, address: str | None) -> bool:
    """Join ``address`` (None: start a local cluster); True when this call started Ray, so it stops it too."""
    if ray.is_initialized():
        return False
    try:
        if address is None:  # the CPUs this process may use (taskset, cgroups), as the local pipeline counts them
            ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False)
        else:
            ray.init(address=address)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise FastNSTError(f"cannot connect to the Ray cluster at {address or 'a new local cluster'} "
                           f"({first_line(exc)}); start one with `ray start --head` or check --ray's address") from None
    return True


def _restore(handlers: dict) -> None:
    """Put back the signal handlers ``ray.init`` replaced, so the caller's Ctrl-C and SIGTERM work as before."""
    if threading.current_thread() is threading.main_thread():
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)


def _run(dataset):
    """``records(dataset)``, with Ray's failures turned into one-line ``FastNSTError``s."""
    ray = _ray()
    try:
        yield from records(dataset)
    except ray.exceptions.RayError as exc:
        cause = _fastnst_cause(exc)
        if cause is not None:
            raise cause from None
        raise FastNSTError(f"the Ray run stopped: {first_line(exc)} (a batch of photos may have killed its worker "
                           f"{TASK_RETRIES + 1} times: out of memory, or a decoder crash); finished outputs are kept: "
                           "rerun to resume, or lower --max-pixels") from None


def _fastnst_cause(exc: BaseException) -> FastNSTError | None:
    """The ``FastNSTError`` an actor raised (its model could not be loaded, say), from inside Ray's wrapping."""
    seen, todo = set(), [exc]
    while todo:
        current = todo.pop()
        if isinstance(current, FastNSTError):
            return current
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        todo += [current.__cause__, current.__context__, getattr(current, "cause", None), *current.args]
    return None
