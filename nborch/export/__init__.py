"""Hand an orchestration to Kubernetes or Docker Compose (SPEC §9).

    Flow.to_kubernetes_yaml(dir, namespace=..., image=...)   → one file per workload + Dockerfile
    Flow.to_docker_compose_yaml(path, image=...)              → one compose file + Dockerfile
    nborch export kubernetes|compose FLOW_OR_DEP.yml OUT      → the same, from a YAML

Every container runs the same image (`nborch` as its entry point) with the arguments the
plan gives it; see `nborch.export.plan`. Files are rendered and checked in memory first, so
an error writes nothing.
"""
from __future__ import annotations

import os

import yaml

from nborch.errors import ExportError
from nborch.export.compose import SECRET_NAME, compose_file
from nborch.export.kubernetes import manifests
from nborch.export.plan import COMPOSE_NAMING, build_plan, dns_label, kubernetes_naming

__all__ = ['ExportError', 'to_docker_compose_yaml', 'to_kubernetes_yaml']

COMPOSE_FILE = 'docker-compose.yml'
DOCKERFILE = 'Dockerfile'


def default_image() -> str:
    from nborch._version import __version__
    return f'nborch:{__version__}'


BASE_IMAGE = 'nborch-base:bookworm'  # what scripts/base_image.sh builds, with no registry
WHEELHOUSE = 'wheelhouse'


def dockerfile(label: str, image: str) -> str:
    return f'''\
# The image every container of {label!r} runs (written by `nborch export`).
# Build it from the folder that holds your executor modules (and a requirements.txt, if they
# need more packages). Nothing is downloaded while it builds: pip installs from the folder
# {WHEELHOUSE}/ inside that folder (`pip wheel` / `pip download` fill it on a machine that
# reaches the package index), so the build works on a machine with no registry:
#   docker build -f <this file> -t {image} --build-arg BASE_IMAGE={BASE_IMAGE} .
# BASE_IMAGE: any image with python3 (>= 3.11) and its venv module; scripts/base_image.sh in
#   nborch's repository builds {BASE_IMAGE} with debootstrap, without a registry.
# NBORCH_PACKAGE: what pip installs nborch from: a name found in {WHEELHOUSE}/ (the default),
#   a wheel, or nborch's source folder, inside the build folder
#   (--build-arg NBORCH_PACKAGE=./vendor/nborch-0.1.0-py3-none-any.whl).
# scripts/build_image.sh does all of this from a checkout of nborch.
ARG BASE_IMAGE={BASE_IMAGE}
FROM ${{BASE_IMAGE}}
ARG NBORCH_PACKAGE=nborch
ARG WHEELHOUSE={WHEELHOUSE}
WORKDIR /app
COPY . /app
RUN python3 -m venv /opt/nborch \\
 && /opt/nborch/bin/pip install --no-cache-dir --no-index --find-links "/app/$WHEELHOUSE" \\
        "$NBORCH_PACKAGE" \\
 && if [ -f requirements.txt ]; then /opt/nborch/bin/pip install --no-cache-dir --no-index \\
        --find-links "/app/$WHEELHOUSE" -r requirements.txt; fi \\
 && rm -rf "/app/$WHEELHOUSE"
ENV PATH=/opt/nborch/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PYTHONPATH=/app PYTHONUNBUFFERED=1
ENTRYPOINT ["nborch"]
'''


class _Dumper(yaml.SafeDumper):
    """Writes shared dicts out in full: manifests are read by people, not only by parsers."""

    def ignore_aliases(self, data) -> bool:
        return True


def _dump(objects: list[dict]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, width=100)


def _check_namespace(namespace: str) -> None:
    if dns_label(namespace, 'namespace') != namespace:
        raise ExportError(f'namespace {namespace!r} is not a Kubernetes name: lower-case '
                          'letters, digits and "-"')


def _write(files: dict[str, str]) -> list[str]:
    """Write every file (all were rendered before the first one is written)."""
    for path, text in files.items():
        with open(path, 'w') as f:
            f.write(text)
    return list(files)


def kubernetes_files(label: str, plans, gateway_port: int | None, directory: str, *,
                     namespace: str = 'default', image: str | None = None) -> dict[str, str]:
    _check_namespace(namespace)
    image = image or default_image()
    plan = build_plan(label, plans, gateway_port, kubernetes_naming(namespace))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ExportError(f'{directory} is a file; Kubernetes manifests go into a folder')
    files = {os.path.join(directory, name): _dump(objects)
             for name, objects in manifests(plan, namespace, image).items()}
    files[os.path.join(directory, DOCKERFILE)] = dockerfile(plan.name, image)
    return files


def compose_files(label: str, plans, gateway_port: int | None, path: str, *,
                  image: str | None = None) -> dict[str, str]:
    image = image or default_image()
    plan = build_plan(label, plans, gateway_port, COMPOSE_NAMING)
    if os.path.isdir(path) or path.endswith(os.sep):
        path = os.path.join(path, COMPOSE_FILE)
    folder = os.path.dirname(path) or '.'
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ExportError(f'{folder} is a file; the compose file needs a folder')
    return {path: _dump([compose_file(plan, image)]),
            os.path.join(folder, DOCKERFILE): dockerfile(plan.name, image)}


def to_kubernetes_yaml(label: str, plans, gateway_port: int | None, directory: str,
                       **options) -> list[str]:
    files = kubernetes_files(label, plans, gateway_port, directory, **options)
    os.makedirs(directory, exist_ok=True)
    return _write(files)


def to_docker_compose_yaml(label: str, plans, gateway_port: int | None, path: str,
                           **options) -> list[str]:
    files = compose_files(label, plans, gateway_port, path, **options)
    folder = os.path.dirname(next(iter(files))) or '.'
    os.makedirs(folder, exist_ok=True)
    return _write(files) + _secret_file_once(os.path.join(folder, SECRET_NAME))


def _secret_file_once(path: str) -> list[str]:
    """Compose's secret file: made with a fresh secret, 0600, unless one is there already
    (exporting again must not change the secret under running containers)."""
    from nborch.runtime.auth import new_secret
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return []
    with os.fdopen(fd, 'w') as f:
        f.write(new_secret().decode() + '\n')
    return [path]
