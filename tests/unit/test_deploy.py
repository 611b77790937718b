"""The deployment files read as their tools would read them: the Kubernetes manifests
against the Kubernetes schemas (shipped inside kubernetes-validate, so no network), the
manifests against each other and against the settings the code accepts, the systemd
units, and the Dockerfile against the Makefile and the repository, down to building the
package the way the image does and checking it carries every file it reads."""

from __future__ import annotations

import configparser
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate.utils
import pytest
import yaml

from collections_bot.config import BotSettings
from server import contact_crypto
from server.__main__ import STOP_MARGIN_S
from server.auth import AccessPolicy
from server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
DOCKERFILE = ROOT / "Dockerfile"

# 1.27: the first release with gRPC probes generally available; and the newest the
# validator knows.
KUBERNETES_VERSIONS = ("1.27", kubernetes_validate.utils.latest_version())
# Settings read by libpq and asyncpg rather than by this code.
LIBRARY_SETTINGS = re.compile(r"^PG[A-Z]+$")


# --- reading the files ------------------------------------------------------------------

def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                found.append((path.name, document))
    return found


def resource(kind: str, name: str) -> dict:
    matches = [doc for _, doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} manifests"
    return matches[0]


def pod_templates() -> Iterator[tuple[str, dict]]:
    for _, doc in manifests():
        if doc["kind"] in ("Deployment", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]


def container(deployment: str) -> dict:
    (only,) = resource("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return only


def env_of(config_map: str, *secrets: str) -> dict[str, str]:
    env = dict(resource("ConfigMap", config_map)["data"])
    for secret in secrets:
        env.update(resource("Secret", secret)["stringData"])
    return env


def env_file(path: Path) -> dict[str, str]:
    """An EnvironmentFile: NAME=value lines, comments and blank lines ignored."""
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"{path.name}: bad line {line!r}"
            env[name] = value
    return env


def with_real_files(env: dict[str, str], folder: Path) -> dict[str, str]:
    """The settings naming files, pointed at files that exist (Settings checks that)."""
    env = dict(env)
    for name in env:
        if name.endswith("_FILE"):
            path = folder / name.lower()
            path.write_text("placeholder")
            env[name] = str(path)
    return env


def names_the_code_reads() -> set[str]:
    names = set()
    for package in ("server", "collections_bot"):
        for path in (ROOT / package).rglob("*.py"):
            names.update(re.findall(r"""["']([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)["']""", path.read_text(encoding="utf-8")))
    return names


class _EveryValue(dict):
    """configparser keeps only the last of repeated keys; systemd keeps them all
    (EnvironmentFile= twice). As the dict of a section's options, this joins them."""

    def __setitem__(self, key, value):
        if isinstance(value, list) and key in self:
            super().__getitem__(key).extend(value)
        else:
            super().__setitem__(key, value)


class _UnitParser(configparser.ConfigParser):
    def optionxform(self, optionstr: str) -> str:
        return optionstr  # systemd keys are case-sensitive


def unit(name: str) -> configparser.ConfigParser:
    parser = _UnitParser(strict=False, interpolation=None, dict_type=_EveryValue,
                         delimiters=("=",), comment_prefixes=("#", ";"), empty_lines_in_values=False)
    parser.read_string((SYSTEMD / name).read_text(encoding="utf-8"), source=name)
    return parser


def values(parser: configparser.ConfigParser, section: str, key: str) -> list[str]:
    return parser[section][key].split("\n") if key in parser[section] else []


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in joined]


def instructions(kind: str) -> list[str]:
    return [arguments for instruction, arguments in dockerfile_instructions() if instruction == kind]


def dockerignore() -> list[tuple[bool, re.Pattern[str], str]]:
    """(is an exception, pattern, text) as Docker reads .dockerignore: later lines win."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        text = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", text):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        rules.append((exception, re.compile(regex), text))
    return rules


def ignored(path: str) -> bool:
    """Whether Docker leaves `path` (relative, with /) out of the build context: a
    pattern matching the path or any folder above it decides, the last one winning."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for exception, regex, _ in dockerignore():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not exception
    return result


def build_context(destination: Path) -> None:
    """Copy what `docker build .` would send: every file .dockerignore lets through."""
    exceptions = [text for exception, _, text in dockerignore() if exception]
    for folder, folders, files in os.walk(ROOT):
        relative = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if relative == "." else relative + "/"
        # Skip a folder left out whole, unless an exception names something inside it.
        folders[:] = [f for f in folders if not ignored(prefix + f)
                      or any(text.startswith(prefix + f + "/") for text in exceptions)]
        for name in files:
            if not ignored(prefix + name):
                target = destination / prefix / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(folder) / name, target)


def protoc_command(recipe: str) -> tuple[list[str], dict[str, str], list[str]]:
    """(include folders, {output flag: folder}, inputs) of a grpc_tools.protoc command."""
    words = shlex.split(recipe)
    words = words[words.index("grpc_tools.protoc") + 1:]
    includes = [w[2:] for w in words if w.startswith("-I")]
    outputs = dict(w.split("=", 1) for w in words if w.startswith("--") and w.split("=", 1)[0].endswith("_out"))
    inputs = [w for w in words if not w.startswith("-")]
    return includes, outputs, inputs


def makefile_protoc() -> tuple[list[str], dict[str, str], list[str]]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    found = re.search(r"^PROTOS := \$\(wildcard (\S+)\)$", text, re.MULTILINE)
    assert found is not None, "the Makefile names its protos in PROTOS"
    protos = found.group(1)
    (recipe,) = [line for line in text.splitlines() if "grpc_tools.protoc" in line]
    includes, outputs, inputs = protoc_command(recipe)
    return includes, outputs, [protos if word == "$(PROTOS)" else word for word in inputs]


def dockerfile_protoc() -> tuple[str, tuple[list[str], dict[str, str], list[str]]]:
    (recipe,) = [run for run in instructions("RUN") if "grpc_tools.protoc" in run]
    return recipe, protoc_command(recipe)


# --- Kubernetes ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version):
    found = manifests()
    assert {doc["kind"] for _, doc in found} >= {"Deployment", "Service", "Job", "ConfigMap", "Secret",
                                                 "PodDisruptionBudget"}
    for file, doc in found:
        try:
            # Strict: a misspelt field is an error, not a field Kubernetes drops.
            kubernetes_validate.utils.validate(doc, version, strict=True)
        except kubernetes_validate.utils.ValidationError as error:
            path = ".".join(map(str, error.path))
            pytest.fail(f"{file} {doc['kind']}/{doc['metadata']['name']} at {path}: {error.message}")


def test_the_schema_check_catches_a_misspelt_field_and_a_named_grpc_probe_port():
    server = resource("Deployment", "credit-server")
    broken = yaml.safe_load(yaml.safe_dump(server))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "health"
    with pytest.raises(kubernetes_validate.utils.ValidationError):
        kubernetes_validate.utils.validate(broken, KUBERNETES_VERSIONS[0], strict=True)
    broken = yaml.safe_load(yaml.safe_dump(server))
    broken["spec"]["template"]["spec"]["containers"][0]["envfrom"] = []
    with pytest.raises(kubernetes_validate.utils.ValidationError):
        kubernetes_validate.utils.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_every_probe_targets_a_port_its_container_declares():
    probes = 0
    for where, template in pod_templates():
        for box in template["spec"]["containers"]:
            declared = {p["containerPort"] for p in box.get("ports", [])} | {p["name"] for p in box.get("ports", [])}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = box.get(kind)
                if probe is None:
                    continue
                probes += 1
                (action,) = [probe[a] for a in ("grpc", "tcpSocket", "httpGet", "exec") if a in probe]
                if "port" in action:
                    assert action["port"] in declared, f"{where} {kind} port {action['port']} is not declared"
    assert probes >= 3


def test_the_server_is_probed_over_grpc_on_its_health_only_port():
    box = container("credit-server")
    config = resource("ConfigMap", "credit-server-config")["data"]
    health_port = int(config["HEALTH_LISTEN_ADDR"].rpartition(":")[2])
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert box[kind]["grpc"]["port"] == health_port
    ports = {p["name"]: p["containerPort"] for p in box["ports"]}
    assert ports["health"] == health_port
    assert ports["grpc"] == int(config["GRPC_LISTEN_ADDR"].rpartition(":")[2])
    assert ports["metrics"] == int(config["METRICS_LISTEN_ADDR"].rpartition(":")[2])


def test_every_configmap_and_secret_a_pod_uses_is_in_the_manifests():
    defined = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in manifests()}
    used = 0
    for where, template in pod_templates():
        spec = template["spec"]
        for box in spec["containers"]:
            for source in box.get("envFrom", []):
                kind, name = (("ConfigMap", source["configMapRef"]["name"]) if "configMapRef" in source
                              else ("Secret", source["secretRef"]["name"]))
                assert (kind, name) in defined, f"{where} reads {kind}/{name}, which no manifest defines"
                used += 1
            for variable in box.get("env", []):
                ref = variable.get("valueFrom", {})
                for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if key in ref:
                        doc = defined[(kind, ref[key]["name"])]
                        assert ref[key]["key"] in {**doc.get("data", {}), **doc.get("stringData", {})}
                        used += 1
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in defined, where
                used += 1
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in defined, where
                used += 1
    assert used >= 8


def test_the_files_the_server_settings_name_are_keys_of_mounted_secrets():
    config = resource("ConfigMap", "credit-server-config")["data"]
    spec = resource("Deployment", "credit-server")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in spec["containers"][0]["volumeMounts"]}
    for name in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "ACCESS_FILE"):
        folder, _, file = config[name].rpartition("/")
        assert folder in mounts, f"{name}: nothing is mounted at {folder}"
        secret = resource("Secret", mounts[folder]["secret"]["secretName"])
        assert file in secret["stringData"], f"{name}: secret {secret['metadata']['name']} has no key {file}"


def test_selectors_pick_the_pods_they_are_meant_for():
    for _, doc in manifests():
        if doc["kind"] == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), doc["metadata"]["name"]
    server_labels = resource("Deployment", "credit-server")["spec"]["template"]["metadata"]["labels"]
    bot_labels = resource("Deployment", "credit-collections-bot")["spec"]["template"]["metadata"]["labels"]
    service = resource("Service", "credit-server")["spec"]
    budget = resource("PodDisruptionBudget", "credit-server")["spec"]
    for selector in (service["selector"], budget["selector"]["matchLabels"]):
        assert selector.items() <= server_labels.items()
        assert not selector.items() <= bot_labels.items()
    port_names = {p["name"] for p in container("credit-server")["ports"]}
    assert all(p["targetPort"] in port_names for p in service["ports"])


def test_processes_commands_replicas_and_the_disruption_budget():
    assert container("credit-server")["command"] == ["python", "-m", "server"]
    assert container("credit-collections-bot")["command"] == ["python", "-m", "collections_bot"]
    assert resource("Deployment", "credit-collections-bot")["spec"]["replicas"] == 2
    server_replicas = resource("Deployment", "credit-server")["spec"]["replicas"]
    budget = resource("PodDisruptionBudget", "credit-server")["spec"]
    assert server_replicas - budget["maxUnavailable"] >= 1
    (migrate,) = resource("Job", "credit-migrate")["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["python", "-m", "server.db.migrate"]


def test_every_container_is_bounded_and_runs_unprivileged():
    for where, template in pod_templates():
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] != 0, where
        assert spec.get("automountServiceAccountToken") is False, where
        for box in spec["containers"]:
            context = box["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= box["resources"][bound].keys(), f"{where} {bound}"


def test_pods_get_longer_to_stop_than_the_processes_take():
    server = resource("Deployment", "credit-server")["spec"]["template"]["spec"]
    config = resource("ConfigMap", "credit-server-config")["data"]
    pause_s = int(server["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    assert server["terminationGracePeriodSeconds"] > pause_s + int(config["SHUTDOWN_GRACE_S"]) + STOP_MARGIN_S
    bot = resource("Deployment", "credit-collections-bot")["spec"]["template"]["spec"]
    bot_config = resource("ConfigMap", "credit-collections-bot-config")["data"]
    assert bot["terminationGracePeriodSeconds"] >= int(bot_config["COLLECTIONS_STOP_TIMEOUT_S"]) + 10


def test_metrics_are_announced_on_the_port_the_processes_serve_them():
    for deployment, config_map in (("credit-server", "credit-server-config"),
                                   ("credit-collections-bot", "credit-collections-bot-config")):
        template = resource("Deployment", deployment)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        port = resource("ConfigMap", config_map)["data"]["METRICS_LISTEN_ADDR"].rpartition(":")[2]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == port
        metrics = [p for p in template["spec"]["containers"][0]["ports"] if p["name"] == "metrics"]
        assert [p["containerPort"] for p in metrics] == [int(port)]


def test_the_kubernetes_settings_are_ones_the_code_reads_and_accepts(tmp_path):
    known = names_the_code_reads()
    # Every ConfigMap and Secret a pod takes its environment from (envFrom).
    sources = {(kind, source[ref]["name"]) for _, template in pod_templates()
               for box in template["spec"]["containers"] for source in box.get("envFrom", [])
               for ref, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")) if ref in source}
    assert len(sources) >= 5
    for kind, name in sources:
        doc = resource(kind, name)
        for setting in {**doc.get("data", {}), **doc.get("stringData", {})}:
            assert setting in known or LIBRARY_SETTINGS.match(setting), f"{name}: {setting} is read by nothing"
    server_env = with_real_files(env_of("credit-server-config", "credit-database", "credit-contact-keys"), tmp_path)
    settings = Settings.from_env(server_env)
    assert settings.auth_mode == "mtls" and settings.grpc_listen_addr.startswith("0.0.0.0:")
    bot = BotSettings.from_env(env_of("credit-collections-bot-config", "credit-database", "credit-contact-keys",
                                      "credit-collections-bot"))
    assert bot.smtp_starttls
    # The placeholders fail closed: a pod started with the example secrets refuses to run.
    with pytest.raises(contact_crypto.ContactKeyError):
        contact_crypto.from_env(server_env)


def test_the_example_access_file_is_one_the_server_loads(tmp_path):
    path = tmp_path / "access.json"
    path.write_text(resource("Secret", "credit-access")["stringData"]["access.json"])
    policy = AccessPolicy.load(path)
    assert policy.is_public("/grpc.health.v1.Health/Check")
    assert policy.allows("order-service", "/credit.v1.CheckoutService/Authorize")
    assert not policy.allows("order-service", "/credit.v1.CreditLineService/AdjustLimit")


# --- systemd ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "module"), [("credit-server.service", "server"),
                                              ("credit-collections-bot.service", "collections_bot")])
def test_the_units_run_their_process_unprivileged_and_restart_it(name, module):
    parsed = unit(name)
    assert parsed["Unit"]["Description"]
    service = parsed["Service"]
    program, *arguments = shlex.split(service["ExecStart"])
    assert Path(program).name.startswith("python") and arguments == ["-m", module]
    assert service["User"] not in ("", "root") and service["Group"] not in ("", "root")
    assert service["Restart"] == "on-failure"
    assert values(parsed, "Service", "EnvironmentFile")[0] == "/etc/credit/credit.env"
    hardening = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                 "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
                 "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "CapabilityBoundingSet": "",
                 "SystemCallFilter": "@system-service"}
    assert {key: service.get(key) for key in hardening} == hardening
    assert "StartLimitBurst" in parsed["Unit"]  # in [Service], systemd ignores it
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


def test_the_units_wait_longer_to_stop_than_the_processes_take():
    server_env = env_file(SYSTEMD / "credit.env.example")
    server = int(unit("credit-server.service")["Service"]["TimeoutStopSec"])
    assert server > int(server_env["SHUTDOWN_GRACE_S"]) + STOP_MARGIN_S
    bot_env = {**server_env, **env_file(SYSTEMD / "collections-bot.env.example")}
    bot = unit("credit-collections-bot.service")
    assert int(bot["Service"]["TimeoutStopSec"]) >= int(bot_env["COLLECTIONS_STOP_TIMEOUT_S"]) + 5
    # The bot's own file comes last, so that its values (its metrics port) win.
    assert [Path(p).name for p in values(bot, "Service", "EnvironmentFile")] == ["credit.env", "collections-bot.env"]


def test_the_environment_files_hold_settings_the_code_reads_and_accepts(tmp_path):
    known = names_the_code_reads()
    server_env = env_file(SYSTEMD / "credit.env.example")
    bot_env = env_file(SYSTEMD / "collections-bot.env.example")
    for name in [*server_env, *bot_env]:
        assert name in known or LIBRARY_SETTINGS.match(name), f"{name} is read by nothing"
    settings = Settings.from_env(with_real_files(server_env, tmp_path))
    assert settings.auth_mode == "mtls" and settings.shutdown_grace_s == int(server_env["SHUTDOWN_GRACE_S"])
    bot = BotSettings.from_env({**server_env, **bot_env})
    assert bot.stop_timeout_s == int(bot_env["COLLECTIONS_STOP_TIMEOUT_S"])
    # Two processes on one host: their metrics ports differ.
    assert bot_env["METRICS_LISTEN_ADDR"] != server_env["METRICS_LISTEN_ADDR"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name", ["credit-server.service", "credit-collections-bot.service"])
def test_systemd_itself_knows_every_directive(name, tmp_path):
    # verify wants the program to exist: point ExecStart at this interpreter.
    text = (SYSTEMD / name).read_text(encoding="utf-8")
    program = shlex.split(unit(name)["Service"]["ExecStart"])[0]
    (tmp_path / name).write_text(text.replace(program, sys.executable))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / name)],
                            capture_output=True, text=True, timeout=60)
    complaints = [line for line in result.stderr.splitlines() if name in line]
    assert result.returncode == 0 and complaints == [], result.stderr


# --- Dockerfile -------------------------------------------------------------------------

def test_every_file_the_dockerfile_copies_exists_and_is_in_the_build_context():
    copied = 0
    for arguments in instructions("COPY"):
        words = shlex.split(arguments)
        if any(w.startswith("--from") for w in words):
            continue
        sources = [w for w in words if not w.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert not ignored(source.rstrip("/")), f"COPY {source}: .dockerignore leaves it out"
            copied += 1
    assert copied >= 5


def test_the_dockerignore_reading_matches_docker():
    assert ignored(".venv/bin/python") and ignored("var/certs/server-key.pem") and ignored("tests/conftest.py")
    assert not ignored("server/app.py") and not ignored("deploy/check_install.py")
    assert ignored("deploy/k8s/server.yaml")
    assert ignored("protos/credit/v1/checkout_pb2.py") and not ignored("protos/credit/v1/checkout.proto")
    assert ignored("server/__pycache__/app.cpython-311.pyc")


def test_the_generated_code_is_left_out_of_the_build_context_as_out_of_git():
    generated = [line for line in (ROOT / ".gitignore").read_text().splitlines() if line.startswith("protos/")]
    assert generated
    ignore_lines = {text for _, _, text in dockerignore()}
    assert set(generated) <= ignore_lines


def test_the_image_generates_the_code_as_the_makefile_does():
    make_includes, make_outputs, make_inputs = makefile_protoc()
    _, (includes, outputs, inputs) = dockerfile_protoc()
    assert includes == make_includes == ["protos"]
    assert inputs == make_inputs
    # The Makefile's list of generated files is the python output of each .proto; the
    # services need the grpc output too. The type stubs are for editors, not for the image.
    assert (ROOT / "Makefile").read_text().count("GENERATED := $(PROTOS:.proto=_pb2.py)") == 1
    assert outputs == {"--python_out": "protos", "--grpc_python_out": "protos"}
    assert {k: v for k, v in make_outputs.items() if not k.startswith("--mypy")} == outputs


def test_the_image_runs_the_server_as_a_user_on_the_ports_kubernetes_expects():
    bases = [arguments.split()[0] for arguments in instructions("FROM")]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    (user,) = instructions("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert int(uid) == resource("Deployment", "credit-server")["spec"]["template"]["spec"]["securityContext"][
        "runAsUser"]
    exposed = {int(port) for arguments in instructions("EXPOSE") for port in arguments.split()}
    assert exposed == {p["containerPort"] for p in container("credit-server")["ports"]}
    (command,) = instructions("CMD")
    assert yaml.safe_load(command) == ["python", "-m", "server"]


def test_the_package_the_image_installs_carries_every_file_it_reads(tmp_path):
    """What the image's build stage does, without Docker: the build context, the protoc
    line of the Dockerfile, a wheel of the package, installed outside the source tree,
    then the check the image runs."""
    context = tmp_path / "context"
    build_context(context)
    recipe, _ = dockerfile_protoc()
    words = shlex.split(recipe)
    command = [sys.executable, "-m", "grpc_tools.protoc"]
    for word in words[words.index("grpc_tools.protoc") + 1:]:
        command += sorted(glob.glob(word, root_dir=context)) if "*" in word else [word]
    subprocess.run(command, cwd=context, check=True, timeout=120)
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), "."],
                   cwd=context, check=True, timeout=300)
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True,
                   timeout=300)
    result = subprocess.run([sys.executable, str(context / "deploy" / "check_install.py")], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=120)
    assert f"installed package at {site / 'server'}" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
