"""Benchmark: frames per second from the fake exchange to one subscribed trio-websocket client (unpaced generation).

    .venv/bin/python bench/fake_throughput.py [--frames 200000] [--seed 0]

Counts frames received by the client between the first generated frame and the last one (generation, JSON writing,
delivery and the client's receive are all inside the measurement). Target: >= 10,000 frames/s.

Server and client share one process and one thread, so the rate per CPU second (``process_time``) is printed too:
on a machine others share, it moves much less than the wall-clock rate when they are busy.
"""

from __future__ import annotations

import argparse
import time

import httpx
import trio
from trio_websocket import open_websocket_url

from tracker.fake.server import open_fake_exchange


async def bench(frames: int, seed: int) -> tuple[int, float, float, int]:
    async with open_fake_exchange(seed=seed) as fx, httpx.AsyncClient() as client:
        import uuid

        from tracker.bitstamp.signing import sign_request

        url = httpx.URL(fx.api_url + "websockets_token/")
        headers = sign_request(
            api_key=fx.api_key,
            api_secret=fx.api_secret,
            method="POST",
            host=url.netloc.decode(),
            path=url.path,
            query="",
            body="",
            nonce=str(uuid.uuid4()),
            timestamp_ms=int(time.time() * 1000),
        ).as_dict()
        token = (await client.post(str(url), headers=headers)).json()["token"]
        async with open_websocket_url(fx.ws_url) as ws:
            for ch in fx.private_channels():
                await ws.send_message(f'{{"event":"bts:subscribe","data":{{"channel":"{ch}","auth":"{token}"}}}}')
                await ws.get_message()
            produced = 0
            done = trio.Event()

            async def produce() -> None:
                nonlocal produced
                while produced < frames:
                    produced += len(await fx.generate(50))
                done.set()

            received = 0
            start = time.perf_counter()
            start_cpu = time.process_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                while not (done.is_set() and received >= produced):
                    await ws.get_message()
                    received += 1
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - start_cpu
            return received, elapsed, cpu, produced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    received, elapsed, cpu, produced = trio.run(bench, args.frames, args.seed)
    print(
        f"fake_throughput: {received} frames in {elapsed:.2f} s = {received / elapsed:,.0f} frames/s "
        f"({received / cpu:,.0f} per CPU second; produced {produced})"
    )


if __name__ == "__main__":
    main()
