#!/usr/bin/env python3
"""Regenerates the trimmed API spec extracts in tests/data/arm/ that tests/template checks
infra/azuredeploy.json against.

For every resource type and apiVersion the template declares, it finds the PUT operation
in Azure's published REST API specs (the Azure/azure-rest-api-specs repository, files and
commits in SOURCES below), takes the body schema of that PUT, and writes it trimmed:

- every property of every object the template sets is listed, with its type, enum and
  read-only flag, and the object's `required` list (allOf bases merged in);
- a property the template does not set is listed by name only (its `$ref`, or its inline
  type), so a misspelled property still shows up, while the file stays small;
- the name segments of the resource type, with the constraints (pattern, length, enum)
  of their path parameters where the listed files define them.

A change to the template that sets a property the extract does not describe makes the test
ask for this script to be run again. Usage, from the repository root, with a checkout of
azure-rest-api-specs:

    python3 tests/data/arm/extract.py --specs ../azure-rest-api-specs
    python3 tests/data/arm/extract.py --git-dir ../azure-rest-api-specs/.git   # each file at its commit

--specs reads the files of the work tree as they are; --git-dir reads each file at the commit
listed for it (`git show <commit>:<path>`), which reproduces the extracts exactly.
"""

import argparse
import json
import posixpath
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
REPOSITORY = "Azure/azure-rest-api-specs"

WEB = "specification/web/resource-manager/Microsoft.Web/AppService/stable/2025-03-01"
STORAGE = "specification/storage/resource-manager/Microsoft.Storage/stable/2024-01-01"
MSI = "specification/msi/resource-manager/Microsoft.ManagedIdentity/ManagedIdentity/stable/2023-01-31"
REDIS = "specification/redisenterprise/resource-manager/Microsoft.Cache/RedisEnterprise/stable/2025-07-01"
INSIGHTS = "specification/applicationinsights/resource-manager/Microsoft.Insights/stable/2020-02-02"
LOGS = "specification/operationalinsights/resource-manager/Microsoft.OperationalInsights/stable/2023-09-01"
AUTHZ = "specification/authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01"
COMMON = "specification/common-types/resource-management"

# (provider namespace, apiVersion) -> the spec files that define its PUT bodies, each with the
# commit it was read at. Files after the provider's own are those its $refs lead to.
SOURCES = {
    ("Microsoft.Web", "2025-03-01"): [
        (f"{WEB}/WebApps.json", "1459c738c632313202865200510f0cac849945a1"),
        (f"{WEB}/AppServicePlans.json", "2acf5860be02a3914f8b87cc5d30fd37c2f62e5a"),
        (f"{WEB}/CommonDefinitions.json", "c8c92e04e3b4101af92d4e89675cea35667beb86"),
    ],
    ("Microsoft.Storage", "2024-01-01"): [
        (f"{STORAGE}/storage.json", "5a2abff0f2e61dac85740375816a18d468786b7b"),
        (f"{STORAGE}/blob.json", "bb756a3644f7488f33d30643244dc51a9ba72577"),
        (f"{STORAGE}/common.json", "4630601fb5cff97a4c41acc4456c8eb14444f659"),
        (f"{COMMON}/v1/types.json", "020576d225442dbd1f0fc5325b7d2b724f6a55e7"),
    ],
    ("Microsoft.ManagedIdentity", "2023-01-31"): [
        (f"{MSI}/ManagedIdentity.json", "642e264a67c6e10eb93ff580111a6e3276cfcf32"),
        (f"{COMMON}/v4/types.json", "05432ee0bc8a3feb5bc0f6fd21f49bb7aeaf13af"),
    ],
    ("Microsoft.Cache", "2025-07-01"): [
        (f"{REDIS}/redisenterprise.json", "15f38e5b507c1875212fabd59839498f3a6e2015"),
        (f"{COMMON}/v2/types.json", "01efba9ffbbfb58c9e9d69859153127379cb00d9"),
        (f"{COMMON}/v3/types.json", "05432ee0bc8a3feb5bc0f6fd21f49bb7aeaf13af"),
    ],
    ("Microsoft.Insights", "2020-02-02"): [
        (f"{INSIGHTS}/components_API.json", "0c3c7e2f4f0308a3f7ff3b9443e038a1f3525b8c"),
    ],
    ("Microsoft.OperationalInsights", "2023-09-01"): [
        (f"{LOGS}/Workspaces.json", "0dcfa37f9e6838328ebfae44ceb216b6ee066949"),
        (f"{COMMON}/v2/types.json", "01efba9ffbbfb58c9e9d69859153127379cb00d9"),
    ],
    ("Microsoft.Authorization", "2022-04-01"): [
        (f"{AUTHZ}/authorization-RoleAssignmentsCalls.json", "007a51db374076edb902fd44eb8299eea6336335"),
    ],
}

# Keys of a template resource that ARM handles itself: not part of the PUT body.
ARM_KEYS = {"type", "apiVersion", "name", "dependsOn", "scope", "condition", "copy", "comments"}

MISSING = object()


class Specs:
    """Spec files by path, read from a work tree or from git at their listed commits."""

    def __init__(self, specs_dir, git_dir, files):
        self.specs_dir = specs_dir
        self.git_dir = git_dir
        self.commits = dict(files)
        self.cache = {}

    def listed(self, path):
        return path in self.commits

    def load(self, path):
        if path not in self.cache:
            if not self.listed(path):
                sys.exit(f"extract.py: {path} is referenced but not listed in SOURCES")
            if self.git_dir:
                text = subprocess.run(
                    ["git", "--git-dir", self.git_dir, "show", f"{self.commits[path]}:{path}"],
                    check=True, capture_output=True, text=True,
                ).stdout
            else:
                text = (Path(self.specs_dir) / path).read_text()
            self.cache[path] = json.loads(text)
        return self.cache[path]

    def resolve(self, path, ref):
        """(file, object) a `$ref` written in `path` points at."""
        file_part, _, pointer = ref.partition("#")
        target = posixpath.normpath(posixpath.join(posixpath.dirname(path), file_part)) if file_part else path
        node = self.load(target)
        for part in pointer.strip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return target, node


def ref_name(ref):
    return ref.rsplit("/", 1)[-1]


def merge_shape(a, b):
    """The union of two template values, as far as their structure goes."""
    if a is MISSING:
        return b
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = merge_shape(out.get(key, MISSING), value)
        return out
    if isinstance(a, list) and isinstance(b, list):
        merged = MISSING
        for item in a + b:
            merged = merge_shape(merged, item)
        return [] if merged is MISSING else [merged]
    return a


def flatten(specs, path, schema):
    """Properties (name -> (file, schema)), required names and additionalProperties of a
    schema with its allOf bases merged in."""
    props, required = {}, []
    for base in schema.get("allOf", []):
        base_path, base_schema = specs.resolve(path, base["$ref"]) if "$ref" in base else (path, base)
        base_props, base_required, _ = flatten(specs, base_path, base_schema)
        props.update(base_props)
        required += base_required
    for name, prop in schema.get("properties", {}).items():
        props[name] = (path, prop)
    required += schema.get("required", [])
    extra = schema.get("additionalProperties")
    return props, list(dict.fromkeys(required)), None if extra is None else (path, extra)


def node(specs, path, schema, shape):
    """The trimmed schema at one position; `shape` is what the template sets there."""
    out = {}
    if schema.get("readOnly"):
        out["readOnly"] = True
    if "$ref" in schema:
        if shape is MISSING:
            out["ref"] = ref_name(schema["$ref"])
            return out
        target_path, target = specs.resolve(path, schema["$ref"])
        inner = node(specs, target_path, target, shape)
        inner["definition"] = ref_name(schema["$ref"])
        inner.update(out)
        return inner
    props, required, extra = flatten(specs, path, schema)
    kind = schema.get("type")
    if kind is None and (props or extra is not None or "allOf" in schema):
        kind = "object"
    if kind is not None:
        out["type"] = kind
    if "enum" in schema:
        out["enum"] = schema["enum"]
    if kind == "object" and isinstance(shape, dict):
        out["properties"] = {
            name: node(specs, prop_path, prop, shape.get(name, MISSING))
            for name, (prop_path, prop) in props.items()
        }
        if required:
            out["required"] = required
        if extra is not None:
            extra_path, extra_schema = extra
            if extra_schema is True or extra_schema == {}:
                out["additionalProperties"] = {}
            else:
                extra_shape = MISSING
                for key, value in shape.items():
                    if key not in props:
                        extra_shape = merge_shape(extra_shape, value)
                out["additionalProperties"] = node(specs, extra_path, extra_schema, extra_shape)
    elif kind == "array" and "items" in schema:
        items_shape = shape[0] if isinstance(shape, list) and shape else MISSING
        out["items"] = node(specs, path, schema["items"], items_shape)
    return out


def path_type(api_path):
    """(resource type, name segments) of a PUT path, or None."""
    if "/providers/" not in api_path:
        return None
    segments = api_path.split("/providers/")[-1].split("/")
    namespace, rest = segments[0], segments[1:]
    if not rest or len(rest) % 2:
        return None
    return "/".join([namespace] + rest[0::2]), rest[1::2]


def parameters(specs, path, operation, path_item):
    """The operation's parameters, each resolved where its file is listed, with its file."""
    out = []
    for param in path_item.get("parameters", []) + operation.get("parameters", []):
        if "$ref" not in param:
            out.append((path, param))
            continue
        file_part = param["$ref"].partition("#")[0]
        target = posixpath.normpath(posixpath.join(posixpath.dirname(path), file_part)) if file_part else path
        if specs.listed(target):
            out.append(specs.resolve(path, param["$ref"]))
        else:
            out.append((None, {"$unresolved": param["$ref"]}))
    return out


def name_segment(segment, params):
    if not (segment.startswith("{") and segment.endswith("}")):
        return {"literal": segment}
    name = segment[1:-1]
    for _, param in params:
        if param.get("name") == name and param.get("in") == "path":
            out = {"parameter": name}
            for key in ("pattern", "minLength", "maxLength", "enum"):
                if key in param:
                    out[key] = param[key]
            return out
    unresolved = [p["$unresolved"] for _, p in params if "$unresolved" in p]
    return {"parameter": name, "constraintsNotExtracted": unresolved}


def find_put(specs, files, resource_type):
    candidates = []
    for path, _ in files:
        for api_path, path_item in specs.load(path).get("paths", {}).items():
            found = path_type(api_path)
            if "put" in path_item and found and found[0].lower() == resource_type.lower():
                candidates.append((path, api_path, path_item))
    # A resource-group path over a subscription one, for types that have both.
    candidates.sort(key=lambda c: "resourcegroups" not in c[1].lower())
    if not candidates:
        sys.exit(f"extract.py: no PUT for {resource_type} in {[p for p, _ in files]}")
    return candidates[0]


def extract(specs, files, resource_type, shape):
    path, api_path, path_item = find_put(specs, files, resource_type)
    params = parameters(specs, path, path_item["put"], path_item)
    bodies = [(p, param["schema"]) for p, param in params if param.get("in") == "body"]
    if len(bodies) != 1:
        sys.exit(f"extract.py: {api_path} has {len(bodies)} body parameters")
    body_path, body = bodies[0]
    _, names = path_type(api_path)
    return {
        "file": path,
        "path": api_path,
        "nameSegments": [name_segment(segment, params) for segment in names],
        "body": node(specs, body_path, body, shape),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--specs", help="work tree of azure-rest-api-specs")
    where.add_argument("--git-dir", help="git directory of azure-rest-api-specs")
    parser.add_argument("--template", default=str(ROOT / "infra" / "azuredeploy.json"))
    parser.add_argument("--out", default=str(ROOT / "tests" / "data" / "arm"))
    args = parser.parse_args()

    template = json.loads(Path(args.template).read_text())
    shapes = {}
    for resource in template["resources"]:
        key = (resource["type"], resource["apiVersion"])
        body = {k: v for k, v in resource.items() if k not in ARM_KEYS}
        shapes[key] = merge_shape(shapes.get(key, MISSING), body)

    by_provider = {}
    for (resource_type, api_version), shape in shapes.items():
        provider = (resource_type.split("/")[0], api_version)
        if provider not in SOURCES:
            sys.exit(f"extract.py: no spec files listed for {provider[0]}@{api_version}; add them to SOURCES")
        by_provider.setdefault(provider, {})[resource_type] = shape

    for (namespace, api_version), types in sorted(by_provider.items()):
        files = SOURCES[(namespace, api_version)]
        specs = Specs(args.specs, args.git_dir, files)
        out = {
            "comment": "Generated by tests/data/arm/extract.py from the files below; do not edit. See README.md here.",
            "provider": namespace,
            "apiVersion": api_version,
            "sources": [{"repository": REPOSITORY, "path": p, "commit": c} for p, c in files],
            "resourceTypes": {
                resource_type: extract(specs, files, resource_type, shape)
                for resource_type, shape in sorted(types.items())
            },
        }
        target = Path(args.out) / f"{namespace}@{api_version}.json"
        target.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")


if __name__ == "__main__":
    main()
