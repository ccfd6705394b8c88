"""The resources a process opens: the store, the CPU pool and the AWS clients.

`open_resources` is the one set-up every host uses: the API's lifespan and the standalone
worker (through service/startup.py, which opens them behind the health probes) and every CLI
command, and `Resources.worker_io` wires the worker's ports to the AWS side. What it opens is
closed in reverse order: the AWS clients, then the CPU pool, then the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from service.audio.params import FingerprintParams, params_for_format
from service.aws.clients import AwsClients
from service.aws.events import parse_message
from service.aws.objects import S3ObjectSource
from service.aws.reports import S3ReportSink, SnsPublisher
from service.executor import CpuPool
from service.match import MatchParams
from service.match.envelopes import EnvelopeCheckParams
from service.settings import Settings
from service.store import Store, create_store
from service.worker.ports import WorkerIO


@dataclass(frozen=True)
class Resources:
    """What a process opened, for the routes, the worker's handlers and the CLI commands."""

    store: Store
    #: The CPU pool (service/executor.py); None for a command that analyses no audio.
    pool: CpuPool | None
    match_params: MatchParams
    #: The fingerprint parameters of the catalogue's index format (FINGERPRINT_FORMAT).
    fp_params: FingerprintParams
    #: S3, SQS and SNS clients; None unless the process runs the worker.
    aws: AwsClients | None = None

    def object_source(self) -> S3ObjectSource:
        """S3 objects (download, list a prefix) through the opened AWS clients."""
        if self.aws is None:
            raise ValueError("S3 needs the resources opened with AWS clients")
        return S3ObjectSource(self.aws.s3)

    def worker_io(self, settings: Settings) -> WorkerIO:
        """The worker's ports (service/worker/ports.py) on these AWS clients: the adapters
        never import one another, so this is where the worker meets the AWS side."""
        if self.aws is None:
            raise ValueError("the worker needs the resources opened with AWS clients")
        topic_arn = settings.sns_topic_arn
        return WorkerIO(
            sqs=self.aws.sqs,
            parse=parse_message,
            objects=S3ObjectSource(self.aws.s3),
            reports=S3ReportSink(self.aws.s3),
            events=SnsPublisher(self.aws.sns, topic_arn, settings.stream_down_after_s)
            if topic_arn
            else None,
        )


@dataclass(frozen=True)
class PoolSpec:
    """The CPU pool a process wants."""

    workers: int
    #: Threads instead of spawned processes (a CLI identify of a few files, tests).
    use_processes: bool = True
    #: Start the processes and import the analysis modules before the first call.
    warm_up: bool = False
    #: Waiting work beyond which `CpuPool.admit` refuses uploads (None: no bound).
    queue_max: int | None = None


#: Opens an unopened store (migrating if it is configured to); the default is Store.open.
StoreOpener = Callable[[Store], Awaitable[None]]


async def _open(store: Store) -> None:
    await store.open()


async def leave_unopened(store: Store) -> None:
    """For `migrate`, which applies the migrations without opening the store for queries."""


def match_params_of(settings: Settings) -> MatchParams:
    """The matcher's parameters the settings choose (the API, the CLI and the worker)."""
    return MatchParams(
        min_confidence=settings.min_confidence,
        max_matches=settings.max_matches,
        max_hits_per_lookup=settings.max_hits_per_lookup,
        envelope_check=EnvelopeCheckParams() if settings.envelope_check else None,
    )


async def enter_resources(
    stack: AsyncExitStack,
    settings: Settings,
    *,
    pool: PoolSpec | None = None,
    aws: bool = False,
    open_store: StoreOpener = _open,
) -> Resources:
    """Open the store (with `open_store`), the CPU pool `pool` asks for and, with `aws`, the
    AWS clients, each registered on `stack` to be closed in reverse order."""
    fp_params = params_for_format(settings.fingerprint_format)
    store = create_store(settings, fp_params.version)
    stack.push_async_callback(store.close)
    await open_store(store)
    cpu: CpuPool | None = None
    if pool is not None:
        cpu = CpuPool(pool.workers, use_processes=pool.use_processes, queue_max=pool.queue_max)
        stack.callback(cpu.close)
        if pool.warm_up:
            await cpu.warm_up()
    clients: AwsClients | None = None
    if aws:
        clients = await AwsClients.open(settings)
        stack.push_async_callback(clients.close)
    return Resources(store, cpu, match_params_of(settings), fp_params, clients)


@asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    pool: PoolSpec | None = None,
    aws: bool = False,
    open_store: StoreOpener = _open,
) -> AsyncIterator[Resources]:
    """`enter_resources` for the duration of the block."""
    async with AsyncExitStack() as stack:
        yield await enter_resources(stack, settings, pool=pool, aws=aws, open_store=open_store)
