#!/usr/bin/env python3
"""Write gitlab_double/runner_image/config_types.tsv: the config.toml tables, key names and Go types
of gitlab-runner at the pinned commit, read from its own source (common/config.go and, for the
docker table's embedded Credentials, helpers/docker/credentials.go).

    git -C <gitlab-runner git dir> show v17.11.3:common/config.go > config.go
    git -C <gitlab-runner git dir> show v17.11.3:helpers/docker/credentials.go > credentials.go
    python3 tests/real_runner/extract_config_table.py config.go credentials.go > gitlab_double/runner_image/config_types.tsv

Each row: the table's path (`config`, `runners`, `runners.docker`, ...), the key (its toml tag)
and the field's Go type as written in the source, with named non-struct types of config.go
resolved to what they are (`DockerPullPolicy` -> `string`); `StringOrArray` stays itself (its
UnmarshalTOML takes a string or an array of strings). A struct type this table does not expand
(the executors AutoScaling never writes: ssh, machine, ...; of kubernetes, the tables the agent writes) keeps its Go name; the
double and the Go decoding test take it as a table they do not model.
"""

from __future__ import annotations

import re
import sys

COMMIT = "3995fbff406e2fc83e4cb22c86d3071dd37cfaa1"  # v17.11.3, tests/real_runner/go.mod
FIELD = re.compile(r"^\s+(\w+)\s+([^\s`]+)\s+`[^`]*toml:\"([^\"]+)\"")
EMBEDDED = re.compile(r"^\s+([\w.]+)\s*(//.*)?$")
# The tables expanded, by path, from their Go struct.
TABLES = {
    "config": "Config", "session_server": "SessionServer", "experimental": "Experimental",
    "experimental.usage_logger": "UsageLogger", "runners": "RunnerConfig", "runners.docker": "DockerConfig",
    "runners.docker.services": "Service", "runners.cache": "CacheConfig", "runners.cache.s3": "CacheS3Config",
    "runners.cache.gcs": "CacheGCSConfig", "runners.cache.azure": "CacheAzureConfig",
    "runners.custom_build_dir": "CustomBuildDir", "runners.instance": "InstanceConfig",
    # the Kubernetes executor's keys AutoGit writes (agent/runtime/kubernetes.py kubernetes_section)
    "runners.kubernetes": "KubernetesConfig", "runners.kubernetes.affinity": "KubernetesAffinity",
    "runners.kubernetes.affinity.node_affinity": "KubernetesNodeAffinity",
    "runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution": "NodeSelector",
    "runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms": "NodeSelectorTerm",
    "runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms.match_expressions":
        "NodeSelectorRequirement",
    "runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms.match_fields":
        "NodeSelectorRequirement",
    "runners.kubernetes.pod_spec": "KubernetesPodSpec",
}  # fmt: skip


def structs(source: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    name = None
    for line in source.splitlines():
        m = re.match(r"^type (\w+) struct \{", line)
        if m:
            name = m.group(1)
            out[name] = []
        elif name and line.startswith("}"):
            name = None
        elif name:
            out[name].append(line)
    return out


def named_types(source: str) -> dict[str, str]:
    found = dict(re.findall(r"^type (\w+) ((?:map|\[\])[^\s{]+|string|int|bool|int64)\s*$", source, re.M))
    block = re.search(r"^type \(\n(.*?)^\)", source, re.M | re.S)
    if block:
        found.update(re.findall(r"^\s+(\w+)\s+((?:map|\[\])[^\s{]+|string|int|bool|int64)\s*$", block.group(1), re.M))
    found.pop("StringOrArray", None)
    return found


def fields(all_structs: dict[str, list[str]], name: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for line in all_structs[name]:
        m = FIELD.match(line)
        if m:
            key = m.group(3).split(",")[0]
            if key and key != "-":
                rows.append((key, m.group(2)))
            continue
        e = EMBEDDED.match(line)
        if e and not line.strip().startswith("//"):
            embedded = e.group(1).split(".")[-1]
            if embedded in all_structs:
                rows += fields(all_structs, embedded)
    return rows


def main(config_go: str, credentials_go: str) -> None:
    source = open(config_go).read()
    all_structs = structs(source)
    all_structs["Credentials"] = structs(open(credentials_go).read())["Credentials"]
    named = named_types(source)
    print(f"# gitlab-runner v17.11.3 (commit {COMMIT}): common/config.go, helpers/docker/credentials.go")
    print("# written by tests/real_runner/extract_config_table.py; table\tkey\tGo type")
    for path, struct in TABLES.items():
        for key, go_type in fields(all_structs, struct):
            bare = go_type.lstrip("*")
            resolved = ("*" if go_type.startswith("*") else "") + named.get(bare, bare)
            for inner in re.findall(r"\w+", resolved):  # []DockerPullPolicy -> []string
                if inner in named:
                    resolved = resolved.replace(inner, named[inner])
            print(f"{path}\t{key}\t{resolved}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
