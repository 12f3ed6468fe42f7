#!/usr/bin/env python3
"""Checks of deploy/ (TAP): systemd units (systemd-analyze verify and security), the
Kubernetes manifests' kinds and fields, the S3 lifecycle rules, the Dockerfile, and what
`meson install` places. Tools that are missing turn their checks into skips.

Environment (from meson): MI_SOURCE_ROOT, MI_BUILD_ROOT, MEDIA_INGEST_WORKER,
MEDIA_BACKFILL, MEDIA_QUEUE.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SRC = os.environ.get('MI_SOURCE_ROOT') or os.path.join(os.path.dirname(__file__), '..', '..')
BUILD = os.environ.get('MI_BUILD_ROOT', '')
DEPLOY = os.path.join(SRC, 'deploy')
SECURITY_MAX = 2.0
DRAIN_DEFAULT_MS = 60000

n = 0
failed = 0


def ok(cond, what, detail=''):
    global n, failed
    n += 1
    if not cond:
        failed += 1
    print(('ok' if cond else 'not ok') + ' %d - %s' % (n, what))
    if not cond and detail:
        for line in str(detail).splitlines()[:30]:
            print('#   ' + line)
    return cond


def skip(what, why):
    global n
    n += 1
    print('ok %d - %s # SKIP %s' % (n, what, why))


def read(*parts):
    with open(os.path.join(DEPLOY, *parts), encoding='utf-8') as f:
        return f.read()


# ---- systemd ----

def unit_settings(text):
    """[section] key=value pairs of a unit file (repeated keys kept in order)."""
    out, sect = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in '#;':
            continue
        if line.startswith('['):
            sect = line.strip('[]')
            continue
        k, _, v = line.partition('=')
        out.append((sect, k.strip(), v.strip()))
    return out


def get(settings, sect, key):
    vals = [v for s, k, v in settings if s == sect and k == key]
    return vals[-1] if vals else None


def seconds(v):
    m = re.fullmatch(r'(\d+)(s|min|m|h)?', v or '')
    if not m:
        return None
    return int(m.group(1)) * {None: 1, 's': 1, 'min': 60, 'm': 60, 'h': 3600}[m.group(2)]


def check_systemd():
    worker = unit_settings(read('systemd', 'media-ingest-worker@.service'))
    backfill = unit_settings(read('systemd', 'media-backfill.service'))
    timer = unit_settings(read('systemd', 'media-backfill.timer'))
    ok(get(worker, 'Service', 'Type') == 'notify', 'worker unit: Type=notify')
    ok(get(worker, 'Service', 'WatchdogSec') is not None, 'worker unit: WatchdogSec set')
    ok(get(worker, 'Service', 'ExecStart') == '/usr/local/bin/media-ingest-worker',
       'worker unit: ExecStart')
    stop = seconds(get(worker, 'Service', 'TimeoutStopSec'))
    ok(stop is not None and stop > DRAIN_DEFAULT_MS / 1000,
       'worker unit: TimeoutStopSec longer than the 60 s drain', stop)
    ok(get(worker, 'Service', 'KillSignal') in (None, 'SIGTERM'), 'worker unit: SIGTERM')
    ok('%i' in (get(worker, 'Service', 'Environment') or '') or
       any('%i' in v for s, k, v in worker if k == 'EnvironmentFile'),
       'worker unit: per-instance settings')
    ok(get(backfill, 'Service', 'Type') == 'oneshot', 'backfill unit: Type=oneshot')
    ok((get(backfill, 'Service', 'ExecStart') or '').startswith('/usr/local/bin/media-backfill'),
       'backfill unit: ExecStart')
    ok(set((get(backfill, 'Service', 'SuccessExitStatus') or '').split()) == {'3', '4'},
       'backfill unit: exit 3 (locked) and 4 (stopped) are not failures')
    ok(get(timer, 'Timer', 'OnCalendar') is not None and
       get(timer, 'Install', 'WantedBy') == 'timers.target', 'timer: OnCalendar, WantedBy')

    sa = shutil.which('systemd-analyze')
    if not sa:
        for what in ('systemd-analyze verify', 'systemd-analyze security (worker)',
                     'systemd-analyze security (backfill)'):
            skip(what, 'systemd-analyze not installed')
        return
    worker_bin = os.environ.get('MEDIA_INGEST_WORKER')
    backfill_bin = os.environ.get('MEDIA_BACKFILL')
    with tempfile.TemporaryDirectory() as tmp:
        # verify checks that ExecStart exists: point the units at the built binaries.
        for name in os.listdir(os.path.join(DEPLOY, 'systemd')):
            if not name.endswith(('.service', '.timer')):
                continue
            text = read('systemd', name)
            if worker_bin and backfill_bin:
                text = text.replace('/usr/local/bin/media-ingest-worker', worker_bin)
                text = text.replace('/usr/local/bin/media-backfill', backfill_bin)
            out = name.replace('@.service', '@1.service')
            with open(os.path.join(tmp, out), 'w', encoding='utf-8') as f:
                f.write(text)
        units = sorted(os.path.join(tmp, u) for u in os.listdir(tmp))
        r = subprocess.run([sa, 'verify'] + units, capture_output=True, text=True,
                           cwd=tmp, timeout=60)
        msg = (r.stdout + r.stderr).strip()
        if worker_bin and backfill_bin:
            ok(r.returncode == 0 and not msg, 'systemd-analyze verify: clean', msg)
        else:
            ok(r.returncode == 0 or 'is not executable' in msg, 'systemd-analyze verify', msg)
    for unit, label in (('media-ingest-worker@.service', 'worker'),
                        ('media-backfill.service', 'backfill')):
        r = subprocess.run([sa, 'security', '--offline=yes', '--no-pager',
                            os.path.join(DEPLOY, 'systemd', unit)],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r'Overall exposure level for \S+: (\d+\.\d+)', r.stdout + r.stderr)
        if not m and 'offline' in (r.stderr or ''):
            skip('systemd-analyze security (%s)' % label, 'no --offline support')
            continue
        level = float(m.group(1)) if m else None
        print('# systemd-analyze security %s: %s' % (unit, level))
        ok(level is not None and level <= SECURITY_MAX,
           'systemd-analyze security (%s) <= %.1f' % (label, SECURITY_MAX),
           (r.stdout + r.stderr)[-2000:])


# ---- Kubernetes ----

def load_yaml_docs(path):
    """All documents of a YAML file; None when PyYAML is missing."""
    try:
        import yaml  # Debian: python3-yaml
    except ImportError:
        return None
    with open(path, encoding='utf-8') as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def dig(obj, *path):
    for p in path:
        if isinstance(obj, dict):
            obj = obj.get(p)
        elif isinstance(obj, list) and isinstance(p, int) and p < len(obj):
            obj = obj[p]
        else:
            return None
    return obj


def check_k8s_text():
    """Without PyYAML: kinds and key fields by text, so the files are at least looked at."""
    k8s = os.path.join(DEPLOY, 'k8s')
    kinds = set()
    text = ''
    for name in sorted(os.listdir(k8s)):
        if name.endswith('.yaml'):
            t = read('k8s', name)
            text += t
            kinds |= set(re.findall(r'^kind:\s*(\S+)', t, re.M))
    for kind in ('Deployment', 'CronJob', 'ConfigMap', 'Secret', 'ScaledObject'):
        ok(kind in kinds, 'k8s (text): a %s' % kind)
    for field in ('path: /healthz', 'path: /readyz', 'concurrencyPolicy: Forbid',
                  'terminationGracePeriodSeconds:', 'listName: bull:media-ingest:wait',
                  'containerPort: 9464'):
        ok(field in text, 'k8s (text): %s' % field)


def check_k8s():
    k8s = os.path.join(DEPLOY, 'k8s')
    docs = {}
    for name in sorted(os.listdir(k8s)):
        if not name.endswith('.yaml'):
            continue
        loaded = load_yaml_docs(os.path.join(k8s, name))
        if loaded is None:
            skip('k8s manifests parse', 'PyYAML (python3-yaml) not installed: text checks only')
            check_k8s_text()
            return
        ok(len(loaded) > 0, 'k8s: %s parses' % name)
        docs[name] = loaded
    objs = [d for name, ds in docs.items() for d in ds if name != 'prometheus-scrape-config.yaml']
    by_kind = {}
    for d in objs:
        ok(isinstance(d.get('apiVersion'), str) and isinstance(d.get('kind'), str) and
           (d.get('kind') == 'Kustomization' or dig(d, 'metadata', 'name')),
           'k8s: %s has apiVersion, kind and metadata.name' % d.get('kind'))
        by_kind.setdefault(d['kind'], []).append(d)
    for kind in ('Deployment', 'CronJob', 'ConfigMap', 'Secret', 'ScaledObject',
                 'TriggerAuthentication', 'PodMonitor', 'PodDisruptionBudget', 'Kustomization'):
        ok(kind in by_kind, 'k8s: a %s' % kind)

    cm = dig(by_kind.get('ConfigMap', [{}])[0], 'data') or {}
    drain_s = int(cm.get('MEDIA_INGEST_DRAIN_TIMEOUT_MS', DRAIN_DEFAULT_MS)) / 1000
    ok(all(isinstance(v, str) for v in cm.values()), 'ConfigMap: all values are strings')
    ok(cm.get('METRICS_ADDR', '').endswith(':9464') and
       not cm.get('METRICS_ADDR', '').startswith('127.'),
       'ConfigMap: METRICS_ADDR listens on the pod address, port 9464')

    dep = by_kind['Deployment'][0]
    spec = dig(dep, 'spec', 'template', 'spec')
    c = dig(spec, 'containers', 0) or {}
    ok(dig(dep, 'spec', 'selector', 'matchLabels').items() <=
       dig(dep, 'spec', 'template', 'metadata', 'labels').items(),
       'Deployment: selector matches the pod labels')
    ports = {p.get('name'): p.get('containerPort') for p in c.get('ports', [])}

    def probe_port(p):
        port = dig(c, p, 'httpGet', 'port')
        return ports.get(port, port)
    ok(dig(c, 'livenessProbe', 'httpGet', 'path') == '/healthz' and
       probe_port('livenessProbe') == 9464, 'Deployment: liveness GET /healthz on 9464')
    ok(dig(c, 'readinessProbe', 'httpGet', 'path') == '/readyz' and
       probe_port('readinessProbe') == 9464, 'Deployment: readiness GET /readyz on 9464')
    grace = spec.get('terminationGracePeriodSeconds')
    ok(isinstance(grace, int) and grace > drain_s,
       'Deployment: terminationGracePeriodSeconds (%s) > drain (%s s)' % (grace, drain_s))
    res = c.get('resources') or {}
    ok(dig(res, 'requests', 'cpu') and dig(res, 'requests', 'memory') and
       dig(res, 'limits', 'memory'), 'Deployment: resources (requests cpu/memory, memory limit)')
    ok(dig(spec, 'securityContext', 'runAsNonRoot') is True and
       dig(c, 'securityContext', 'allowPrivilegeEscalation') is False and
       dig(c, 'securityContext', 'readOnlyRootFilesystem') is True,
       'Deployment: non-root, no privilege escalation, read-only root')
    env_from = [e.get('configMapRef', e.get('secretRef', {})).get('name')
                for e in c.get('envFrom', [])]
    cm_name = dig(by_kind['ConfigMap'][0], 'metadata', 'name')
    secret_names = [dig(s, 'metadata', 'name') for s in by_kind['Secret']]
    ok(cm_name in env_from and any(s in env_from for s in secret_names),
       'Deployment: settings from the ConfigMap and the Secret')
    ok((c.get('command') or [''])[0] == 'media-ingest-worker', 'Deployment: runs the worker')

    cj = by_kind['CronJob'][0]
    ok(dig(cj, 'spec', 'concurrencyPolicy') == 'Forbid', 'CronJob: concurrencyPolicy Forbid')
    ok(isinstance(dig(cj, 'spec', 'schedule'), str), 'CronJob: schedule')
    pod = dig(cj, 'spec', 'jobTemplate', 'spec', 'template', 'spec')
    ok(pod.get('restartPolicy') in ('Never', 'OnFailure'), 'CronJob: restartPolicy')
    ok((dig(pod, 'containers', 0, 'command') or [''])[0] == 'media-backfill',
       'CronJob: runs media-backfill')

    so = by_kind['ScaledObject'][0]
    trig = dig(so, 'spec', 'triggers', 0) or {}
    prefix, queue = cm.get('BULLMQ_PREFIX', 'bull'), cm.get('MEDIA_INGEST_QUEUE', 'media-ingest')
    ok(trig.get('type') == 'redis' and
       dig(trig, 'metadata', 'listName') == '%s:%s:wait' % (prefix, queue),
       'ScaledObject: redis list trigger on %s:%s:wait' % (prefix, queue))
    ok(isinstance(dig(trig, 'metadata', 'listLength'), str),
       'ScaledObject: listLength is a string')
    ok(dig(so, 'spec', 'scaleTargetRef', 'name') == dig(dep, 'metadata', 'name'),
       'ScaledObject: targets the worker Deployment')
    ta = by_kind['TriggerAuthentication'][0]
    ok(dig(trig, 'authenticationRef', 'name') == dig(ta, 'metadata', 'name'),
       'ScaledObject: its TriggerAuthentication exists')
    ok(dig(ta, 'spec', 'secretTargetRef', 0, 'name') in secret_names,
       'TriggerAuthentication: its Secret exists')

    pm = by_kind['PodMonitor'][0]
    ok(dig(pm, 'spec', 'podMetricsEndpoints', 0, 'port') in ports,
       'PodMonitor: scrapes the metrics port')
    scrape = docs['prometheus-scrape-config.yaml'][0]
    job = dig(scrape, 'scrape_configs', 0) or {}
    ok(job.get('metrics_path') == '/metrics' and job.get('kubernetes_sd_configs'),
       'Prometheus scrape config: a kubernetes_sd job on /metrics')

    kus = by_kind['Kustomization'][0]
    ok(all(os.path.exists(os.path.join(k8s, r)) for r in kus.get('resources', [])),
       'Kustomization: every resource file exists')


# ---- S3, Docker ----

def check_s3():
    variants = {'lifecycle.json': None, 'lifecycle-expire-90d.json': 'Expiration',
                'lifecycle-archive-30d.json': 'Transitions'}
    for name, extra in variants.items():
        try:
            rules = json.loads(read('s3', name))['Rules']
        except (OSError, ValueError, KeyError) as e:
            ok(False, 's3: %s parses' % name, e)
            continue
        ok(all(r.get('Status') == 'Enabled' and 'Filter' in r for r in rules),
           's3: %s rules are enabled and filtered' % name)
        ok(any(dig(r, 'AbortIncompleteMultipartUpload', 'DaysAfterInitiation') == 1
               for r in rules), 's3: %s aborts incomplete multipart uploads after 1 day' % name)
        if extra == 'Expiration':
            ok(any(dig(r, 'Expiration', 'Days') == 90 for r in rules),
               's3: %s expires objects after 90 days' % name)
        elif extra == 'Transitions':
            ok(any(dig(r, 'Transitions', 0, 'Days') == 30 for r in rules),
               's3: %s archives objects after 30 days' % name)


def check_docker():
    text = read('docker', 'Dockerfile')
    froms = re.findall(r'^FROM\s+(\S+)', text, re.M)
    ok(len(froms) >= 2 and all(f == 'debian:12-slim' for f in froms),
       'Dockerfile: multi-stage on debian:12-slim', froms)
    users = re.findall(r'^USER\s+(\S+)', text, re.M)
    ok(users and not users[-1].split(':')[0] in ('0', 'root') and
       users[-1].split(':')[0].isdigit(), 'Dockerfile: runs as a numeric non-root user')
    ok('--from=build' in text, 'Dockerfile: copies the build stage output')


# ---- meson install ----

def check_install():
    meson = shutil.which('meson')
    if not meson or not BUILD:
        skip('meson install', 'meson or MI_BUILD_ROOT missing')
        return
    with tempfile.TemporaryDirectory() as dest:
        r = subprocess.run([meson, 'install', '-C', BUILD, '--no-rebuild', '--quiet',
                            '--destdir', dest], capture_output=True, text=True, timeout=120)
        if not ok(r.returncode == 0, 'meson install --destdir', r.stdout + r.stderr):
            return
        info = json.loads(subprocess.run([meson, 'introspect', '--buildoptions', BUILD],
                                         capture_output=True, text=True).stdout)
        opt = {o['name']: o['value'] for o in info}
        prefix = opt['prefix']
        bindir = os.path.join(prefix, opt['bindir'])
        root = lambda p: os.path.join(dest, p.lstrip('/'))
        for exe in ('media-ingest-worker', 'media-backfill', 'media-queue'):
            ok(os.access(root(os.path.join(bindir, exe)), os.X_OK), 'installed %s' % exe)
        unitdir = os.path.join(prefix, 'lib', 'systemd', 'system')
        for unit in ('media-ingest-worker@.service', 'media-backfill.service',
                     'media-backfill.timer'):
            ok(os.path.exists(root(os.path.join(unitdir, unit))), 'installed %s' % unit)
        with open(root(os.path.join(unitdir, 'media-backfill.service')), encoding='utf-8') as f:
            exec_start = get(unit_settings(f.read()), 'Service', 'ExecStart') or ''
        ok(exec_start.startswith(os.path.join(bindir, 'media-backfill')),
           'installed units name the installed binaries', exec_start)


def main():
    check_systemd()
    check_k8s()
    check_s3()
    check_docker()
    check_install()
    print('1..%d' % n)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
