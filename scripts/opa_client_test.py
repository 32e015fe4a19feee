"""Ask a running `sark-pdp serve` (HTTP front door) through opa-python-client, a third-party
OPA REST client, and compare each answer with `sark-pdp eval`. Run by scripts/opa-client-test.sh.

Inputs: every shard/samples/*.json, and the input of every case of policies/cases/*.yaml whose
entrypoint is data.sark.decision (the default when a case names none). For each input both
data.mcp.allow and data.mcp.result are queried with the client's `OpaClient.query_rule`
(POST /v1/data/mcp/<rule> with {"input": ...}) and with
`sark-pdp eval --entrypoint data.mcp.<rule> --input FILE`; the `result` values must be equal.
Exit 1 on any mismatch or when fewer than MIN_INPUTS inputs were compared.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import yaml
from opa_client import OpaClient

MIN_INPUTS = 20
RULES = ("allow", "result")
MISSING = "<no result>"


class CaseLoader(yaml.SafeLoader):
    """SafeLoader that keeps unquoted dates/times as strings (JSON has no date type)."""


CaseLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def inputs(root):
    """(name, input) pairs: the samples, then the data.sark.decision cases."""
    out = []
    for path in sorted(glob.glob(os.path.join(root, "shard", "samples", "*.json"))):
        with open(path, encoding="utf-8") as f:
            out.append((os.path.relpath(path, root), json.load(f)))
    for path in sorted(glob.glob(os.path.join(root, "policies", "cases", "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=CaseLoader)
        for i, case in enumerate(doc.get("cases") or []):
            if case.get("entrypoint", "data.sark.decision") != "data.sark.decision":
                continue
            if "input" not in case:
                continue
            name = f"{os.path.relpath(path, root)}: {case.get('name', f'case {i}')}"
            out.append((name, case["input"]))
    return out


def eval_cli(binary, rule, input_path):
    proc = subprocess.run(
        [binary, "eval", "--entrypoint", f"data.mcp.{rule}", "--input", input_path],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return f"<eval exit {proc.returncode}: {proc.stderr.strip()}>"
    return json.loads(proc.stdout).get("result", MISSING)


def query_http(client, rule, value):
    try:
        answer = client.query_rule(input_data=value, package_path="mcp", rule_name=rule)
    except Exception as e:  # an HTTP error is a mismatch, reported with its text
        body = getattr(getattr(e, "response", None), "text", "")
        return f"<client error {type(e).__name__}: {e} {body}>".strip()
    return answer.get("result", MISSING)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True, help="HOST:PORT of the HTTP front door")
    ap.add_argument("--bin", required=True, help="path of sark-pdp")
    ap.add_argument("--root", required=True, help="repository root")
    args = ap.parse_args()

    host, port = args.addr.rsplit(":", 1)
    # retries=0: a 5xx must show up as a mismatch, not be retried away.
    client = OpaClient(host=host, port=int(port), timeout=30, retries=0)

    cases = inputs(args.root)
    compared = matched = 0
    with tempfile.TemporaryDirectory(prefix="opa-client-") as tmp, client:
        input_path = os.path.join(tmp, "input.json")
        for name, value in cases:
            with open(input_path, "w", encoding="utf-8") as f:
                json.dump(value, f)
            ok = True
            for rule in RULES:
                via_client = query_http(client, rule, value)
                via_eval = eval_cli(args.bin, rule, input_path)
                if via_client != via_eval:
                    ok = False
                    print(f"MISMATCH {name} [data.mcp.{rule}]")
                    print(f"  opa-python-client: {json.dumps(via_client, sort_keys=True)}")
                    print(f"  sark-pdp eval:     {json.dumps(via_eval, sort_keys=True)}")
            compared += 1
            matched += ok

    print(f"opa-client: {compared} inputs, {matched} matched")
    if compared < MIN_INPUTS:
        print(f"opa-client: fewer than {MIN_INPUTS} inputs compared", file=sys.stderr)
        return 1
    return 0 if matched == compared else 1


if __name__ == "__main__":
    sys.exit(main())
