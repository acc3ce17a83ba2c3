"""`python -m launch`: run training on a Ray cluster as a Ray Job.

    python -m launch submit [--address URL] [--follow | --wait] [--env NAME ...] [recipe=NAME key=value ...]
    python -m launch logs JOB [--address URL] [--follow]
    python -m launch status JOB [--address URL]
    python -m launch stop JOB [--address URL]

`submit` prints the job id alone on stdout (everything else goes to stderr), so
`JOB=$(python -m launch submit recipe=r4b)` works. The address defaults to
$RAY_API_SERVER_ADDRESS, else http://127.0.0.1:8265 (the head's dashboard port).
Exit codes: 0 submitted / job succeeded, 1 job failed or was stopped, 2 usage or connection error.
"""

from __future__ import annotations

import argparse
import os
import sys

from launch.jobs import DEFAULT_ENV, JobSpec, LaunchError


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m launch", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)

    def with_address(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--address", help="Ray Jobs API, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS "
                                         "or http://127.0.0.1:8265)")
        return p

    submit = with_address(sub.add_parser("submit", help="submit `python -m trainer OVERRIDES` as a Ray Job"))
    submit.add_argument("overrides", nargs="*", help="trainer overrides: recipe=NAME key=value ...")
    how = submit.add_mutually_exclusive_group()
    how.add_argument("--follow", action="store_true", help="stream the job's logs until it ends")
    how.add_argument("--wait", action="store_true", help="wait for the job to end without streaming logs")
    submit.add_argument("--env", action="append", default=[], metavar="NAME",
                        help=f"copy this environment variable into the job (always copied when set: "
                             f"{', '.join(DEFAULT_ENV)}); values are never printed")
    submit.add_argument("--python", default="python", help="interpreter on the cluster nodes (default: python)")
    submit.add_argument("--requirements", default="none",
                        help="none (use the cluster's environment), pinned (this machine's versions of the "
                             "project's dependencies, installed by Ray per job) or a requirements file")
    submit.add_argument("--entrypoint-num-cpus", type=float, default=None,
                        help="CPUs reserved for the controller process (default: none reserved)")
    submit.add_argument("--job-id", default=None, help="submission id to use instead of a generated one")

    logs = with_address(sub.add_parser("logs", help="print a job's logs"))
    logs.add_argument("job_id")
    logs.add_argument("--follow", action="store_true", help="keep streaming until the job ends")

    for name, text in (("status", "print a job's status"), ("stop", "stop a running job")):
        with_address(sub.add_parser(name, help=text)).add_argument("job_id")
    return top


def exit_code(state: str) -> int:
    print(f"job ended: {state}", file=sys.stderr)
    return 0 if state == "SUCCEEDED" else 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from launch import jobs

    jobs.enable_token_auth_if_available()  # before anything imports ray

    try:
        if args.command == "submit":
            spec = JobSpec(overrides=args.overrides, env_names=args.env, python=args.python,
                           requirements=args.requirements, entrypoint_num_cpus=args.entrypoint_num_cpus,
                           submission_id=args.job_id)
            job_id = jobs.submit(spec, args.address)
            print(job_id, flush=True)
            passed = sorted(spec.passed_env())
            print(f"submitted {job_id} to {jobs.resolve_address(args.address)}: {spec.entrypoint()}\n"
                  f"environment passed (names only): {', '.join(passed) or 'none'}\n"
                  f"follow with: python -m launch logs {job_id} --follow", file=sys.stderr)
            if args.follow:
                return exit_code(jobs.follow(job_id, args.address, out=sys.stderr))
            if args.wait:
                return exit_code(jobs.wait(job_id, args.address))
            return 0
        if args.command == "logs":
            if args.follow:
                return exit_code(jobs.follow(args.job_id, args.address))
            sys.stdout.write(jobs.logs(args.job_id, args.address))
            return 0
        if args.command == "status":
            print(jobs.status(args.job_id, args.address))
            return 0
        if args.command == "stop":
            stopped = jobs.stop(args.job_id, args.address)
            print("stopping" if stopped else f"not running: {jobs.status(args.job_id, args.address)}")
            return 0
    except LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
