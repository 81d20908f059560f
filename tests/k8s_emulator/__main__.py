"""`python -m tests.k8s_emulator --port 8001 --kubeconfig /tmp/emu.kubeconfig` for manual use."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from .emulator import KubeEmulator


async def _serve(args: argparse.Namespace) -> None:
    async with KubeEmulator(port=args.port, token=args.token) as emu:
        emu.default_behaviour = args.behaviour
        if args.kubeconfig:
            emu.write_kubeconfig(args.kubeconfig, args.namespace)
            print(f"kubeconfig written to {args.kubeconfig}", flush=True)
        print(f"Kubernetes API emulator at {emu.url} (token {emu.token})", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s_emulator")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="bearer token (random by default)")
    parser.add_argument("--kubeconfig", default=None, help="write a kubeconfig here")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--behaviour", default="ready", help="default pod behaviour")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
