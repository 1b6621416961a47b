#!/usr/bin/python3
"""Parse a Prometheus text exposition (stdin) with prometheus_client's own
parser and print its samples as JSON: {"name{k=v,...}": value}, and the
families' types under "#type name".  Exits non-zero when it does not parse."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out["#type " + fam.name] = fam.type
    for s in fam.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        out[s.name + ("{%s}" % labels if labels else "")] = s.value
print(json.dumps(out, sort_keys=True))
