"""The REST API fuzzed from its own OpenAPI schema: many schemathesis cases per operation, with every check, and the
server's memory before and after.

The server is the real app (`cnnlab.apps.serve.create_app`) serving a LeNet trained on the bundled digits, called
in process through its ASGI interface. Every check schemathesis has runs except "positive data acceptance": a
schema can say "binary", not "a decodable image", so random bytes are rightly refused with a documented 400.

    python benchmarks/api_fuzz.py [--cases 500] [--quick]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from _common import print_environment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=500, help="cases per operation (default: 500)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 5 cases per operation")
    args = ap.parse_args()
    cases = 5 if args.quick else args.cases

    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    import cnnlab
    from cnnlab.apps.serve import create_app

    print_environment()
    with tempfile.TemporaryDirectory(prefix="cnnlab-fuzz-") as tmp:
        run = cnnlab.train(recipe="digits", epochs=2, subset=400, out=str(Path(tmp) / "run"), quiet=True)
        app = create_app(run.path)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        total, failures, t0 = 0, [], time.perf_counter()
        for result in schema.get_all_operations():
            operation = result.ok()
            count = [0]

            @given(case=operation.as_strategy())
            @settings(max_examples=cases, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def conforms(case) -> None:
                count[0] += 1
                case.call_and_validate(excluded_checks=[positive_data_acceptance])

            try:
                conforms()
            except Exception as exc:  # noqa: BLE001 - a failure is a finding: report it and go on
                failures.append(f"{operation.label}: {str(exc).strip().splitlines()[0][:300]}")
            total += count[0]
            print(f"  {operation.label:<28} {count[0]:>5} cases")
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{total} cases in {time.perf_counter() - t0:.1f} s; {len(failures)} operations with failures; peak memory "
          f"{rss_before:.0f} MiB before the cases, {rss_after:.0f} MiB after")
    for failure in failures:
        print(f"  FAILED {failure}")


if __name__ == "__main__":
    main()
