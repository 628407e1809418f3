"""Runs moto's server with subscribed Marketplace Metering customers, for test/integration/submit/moto-wire.test.ts.

moto has no HTTP API to subscribe a customer: its metering backend answers CustomerNotSubscribed unless
the customer is in `customers_by_product[product_code]` of the backend for the calling account and
region (moto/meteringmarketplace/models.py). Those backends live in this process, so the server runs
here, in a thread (moto's ThreadedMotoServer), and the customers are seeded before it starts.

Usage: moto_metering_server.py --product P --customer C [--customer C2 ...] [--region R] [--port N]

Once the server listens, prints one JSON line {"ready": true, "port": ..., "account": ..., ...} on
stdout. Runs until stdin closes (the parent exited) or SIGTERM/SIGINT.
"""

import argparse
import json
import os
import signal
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--product", action="append", required=True, help="product code (repeatable)")
    parser.add_argument(
        "--customer",
        action="append",
        default=[],
        help="CustomerIdentifier to subscribe to every --product (repeatable)",
    )
    args = parser.parse_args()

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.meteringmarketplace.models import meteringmarketplace_backends
    from moto.server import ThreadedMotoServer

    # The account moto resolves a request to: MOTO_ACCOUNT_ID when set, else the default (the test's
    # access key is not a moto IAM key, so no other account applies).
    account = os.environ.get("MOTO_ACCOUNT_ID", DEFAULT_ACCOUNT_ID)
    backend = meteringmarketplace_backends[account][args.region]
    for product in args.product:
        for customer in args.customer:
            if not backend.customers_by_product[product].is_subscribed(customer):
                backend.customers_by_product[product].append(customer)

    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()  # returns once the socket is bound and listening
    host, port = server.get_host_and_port()
    print(
        json.dumps(
            {
                "ready": True,
                "host": host,
                "port": port,
                "account": account,
                "region": args.region,
                "subscribed": {p: list(backend.customers_by_product[p]) for p in args.product},
            }
        ),
        flush=True,
    )

    def stop(_signum: int, _frame: object) -> None:
        server.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdin.read()  # EOF: the parent closed our stdin or died
    server.stop()


if __name__ == "__main__":
    main()
