"""Helm without a helm binary: lint and render a chart with helm-python-sdk (Helm's Go SDK as a
shared library), and JSON schemas of prometheus-operator's resources from cloudcoil's models.
Run by the project's venv (xtask/src/deploy_tools.rs); every command prints to stdout.

  chart.py lint CHART VALUES_JSON            the lint report as JSON (strict: warnings count)
  chart.py render CHART NAME NS VALUES_JSON  the manifests, in Helm's install order
  chart.py schemas DIR KIND...               DIR/KIND.schema.json for monitoring.coreos.com/v1
                                             kinds, closed to unknown keys
"""
import json
import re
import sys

# Helm's install order (pkg/release/util/kind_sorter.go) for the kinds a chart of this size has;
# other kinds (the custom resources) go last, as Helm puts unknown kinds.
ORDER = ["Namespace", "NetworkPolicy", "ServiceAccount", "Secret", "ConfigMap", "ClusterRole",
         "ClusterRoleBinding", "Role", "RoleBinding", "Service", "DaemonSet"]


def lint(chart, values):
    import helm_python as helm

    report = helm.lint(chart, values, strict=True, namespace="nvmeof-exporter")
    print(json.dumps(report))


def render(chart, name, namespace, values):
    import helm_python as helm

    with helm.Chart.load(chart) as c:
        rendered = c.render(values, name=name, namespace=namespace, is_install=True)
    docs = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        # A template may hold several documents; Helm sorts each one by its kind.
        for doc in re.split(r"(?m)^---\s*$", text):
            body = doc.strip("\n")
            kind = re.search(r"(?m)^kind:\s*(\S+)", body)
            if not kind:
                continue
            rank = ORDER.index(kind[1]) if kind[1] in ORDER else len(ORDER)
            docs.append((rank, path, body))
    docs.sort(key=lambda d: (d[0], d[1]))
    for _, path, body in docs:
        print(f"---\n# Source: {path}\n{body}")


def closed(node):
    """additionalProperties: false on every object with declared properties (the models leave
    them open), so that a misspelt key fails as under kubernetes-validate --strict; maps such as
    labels declare no properties and stay open."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        for v in node.values():
            closed(v)
    elif isinstance(node, list):
        for v in node:
            closed(v)
    return node


def schemas(out_dir, kinds):
    from cloudcoil.models.prometheus_operator import v1

    for kind in kinds:
        model = getattr(v1, kind)
        text = json.dumps(closed(model.model_json_schema(by_alias=True)), indent=1, sort_keys=True)
        # Go's inline flag (?i) is no regex to check-jsonschema's metaschema (ECMA-262): spell
        # the one pattern that uses it (a rule group's partial response strategy) out in both
        # cases.
        text = text.replace('"^(?i)(abort|warn)?$"', '"^([Aa][Bb][Oo][Rr][Tt]|[Ww][Aa][Rr][Nn])?$"')
        if "(?i)" in text:
            sys.exit(f"{kind}: another (?i) pattern in the schema")
        with open(f"{out_dir}/{kind}.schema.json", "w") as f:
            f.write(text)


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "lint":
        lint(args[0], json.loads(args[1]))
    elif cmd == "render":
        render(args[0], args[1], args[2], json.loads(args[3]))
    elif cmd == "schemas":
        schemas(args[0], args[1:])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
