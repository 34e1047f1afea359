"""firmware_configs/: ESPHome's own validator on every node file, and the payload
contract between the YAML lambdas, the simulated nodes and the agent's models."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from edge_agent.sensors import messages
from edge_agent.sensors.simulate import NODE_CLASSES

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware_configs"
NODE_FILES = sorted(p for p in FIRMWARE.glob("*.yaml") if not p.name.startswith("secrets"))
KIND_PACKAGES = {"door_beam": "door_beam.yaml", "pir": "pir.yaml", "shelf_scale": "shelf_scale.yaml"}


def esphome_binary() -> str:
    for candidate in (os.environ.get("ESPHOME"), REPO / ".venv-esphome" / "bin" / "esphome", shutil.which("esphome")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("ESPHome is not installed: run `bash scripts/esphome-venv.sh` (scripts/setup.sh --test does) "
                "or set ESPHOME to an esphome executable")


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A copy of firmware_configs/ with the example secrets as secrets.yaml."""
    target = tmp_path / "firmware_configs"
    shutil.copytree(FIRMWARE, target, ignore=shutil.ignore_patterns("secrets.yaml", ".esphome"))
    shutil.copy(target / "secrets.example.yaml", target / "secrets.yaml")
    return target


def esphome_config(workdir: Path, name: str, offline: bool = False) -> subprocess.CompletedProcess:
    return run_esphome(workdir, ["config", name], offline)


def run_esphome(workdir: Path, args: list[str], offline: bool = True) -> subprocess.CompletedProcess:
    command = [esphome_binary(), *args]
    # Network cut off where the kernel allows it (a user + network namespace);
    # elsewhere a dead proxy at least stops HTTP(S).
    if offline and shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"],
                                                              capture_output=True).returncode == 0:
        command = ["unshare", "-rn", *command]
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"} if offline else None
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=120, env=env)


def test_there_is_a_node_file_for_every_kind():
    kinds = set()
    for path in NODE_FILES:
        text = path.read_text()
        kinds |= {kind for kind, package in KIND_PACKAGES.items() if f"packages/{package}" in text}
    assert kinds == set(KIND_PACKAGES)
    assert (FIRMWARE / "secrets.example.yaml").exists()
    assert not (FIRMWARE / "secrets.yaml").exists() or "secrets.yaml" in (REPO / ".gitignore").read_text()


@pytest.mark.parametrize("node_file", [p.name for p in NODE_FILES])
def test_esphome_validates_every_node_config_offline(workdir, node_file):
    result = esphome_config(workdir, node_file, offline=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Configuration is valid!" in result.stdout + result.stderr
    # The validated config is what the agent expects: topics under sensors/<node id>.
    node_id = yaml.safe_load(re.search(r"substitutions:\n((?:  .*\n)+)", (FIRMWARE / node_file).read_text())
                             .group(1))["node_id"]
    assert f"topic_prefix: sensors/{node_id}" in result.stdout
    assert f"topic: sensors/{node_id}/event" in result.stdout


def test_esphome_rejects_a_broken_config(workdir):
    """The validator really checks: a flash pin and a missing secret are refused."""
    bad = (workdir / "door-main.yaml").read_text().replace("GPIO26", "GPIO6")
    (workdir / "bad-pin.yaml").write_text(bad)
    result = esphome_config(workdir, "bad-pin.yaml")
    assert result.returncode != 0
    assert "GPIO6" in result.stdout + result.stderr or "flash" in (result.stdout + result.stderr).lower()

    secrets = (workdir / "secrets.yaml").read_text().replace("mqtt_password:", "mqtt_passwd:")
    (workdir / "secrets.yaml").write_text(secrets)
    result = esphome_config(workdir, "door-main.yaml")
    assert result.returncode != 0
    assert "mqtt_password" in result.stdout + result.stderr


# -- the C++ in the lambdas ------------------------------------------------------------------
# `esphome compile` needs toolchains from the internet; `--only-generate` writes main.cpp
# offline. Its lambdas (ids already rewritten by ESPHome, #line pointing at the YAML) are
# compiled here against stand-ins for the few ESPHome/ArduinoJson types they touch: this
# catches syntax errors, unknown names and wrong types, not differences from the real headers.
STAND_INS = r"""
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
namespace ArduinoJson {
struct MemberProxy {
  template <typename T> MemberProxy &operator=(const T &) {
    static_assert(std::is_arithmetic_v<T> || std::is_same_v<T, std::string> ||
                  std::is_convertible_v<T, const char *>, "ArduinoJson stores numbers, booleans and strings");
    return *this;
  }
};
struct JsonObject { MemberProxy operator[](const char *) const { return {}; } };
}  // namespace ArduinoJson
namespace esphome {
uint32_t millis();
uint32_t random_uint32();
namespace globals { template <typename T> struct GlobalsComponent { T &value(); }; }
namespace sensor { struct Sensor { float state; }; }
namespace binary_sensor { struct BinarySensor { bool state; }; }
namespace wifi_signal { struct WiFiSignalSensor : sensor::Sensor {}; }
namespace uptime { struct UptimeSecondsSensor : sensor::Sensor {}; }
namespace hx711 { struct HX711Sensor : sensor::Sensor {}; }
namespace adc { template <typename... T> struct ADCSensorT : sensor::Sensor {}; using ADCSensor = ADCSensorT<>; }
namespace gpio { struct GPIOBinarySensor : binary_sensor::BinarySensor {}; }
}  // namespace esphome
using namespace esphome;
"""


@pytest.mark.parametrize("node_file", [p.name for p in NODE_FILES])
def test_firmware_lambdas_compile(workdir, node_file):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.fail("g++ is needed to check the firmware lambdas (apt-get install g++; "
                    "scripts/test-apt-packages.txt lists it)")
    result = run_esphome(workdir, ["compile", "--only-generate", node_file], offline=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (main_cpp,) = (workdir / ".esphome" / "build").glob("*/src/main.cpp")
    source = main_cpp.read_text()
    declared = dict((name, type_) for type_, name in
                    re.findall(r"^static ([\w:<>, ]+?) \*const (\w+) = reinterpret_cast", source, re.M))
    lambdas = re.findall(r"\[\]\(([^)]*)\) -> ([\w:]+) \{\n(.*?)\n  \}\)", source, re.S)
    bodies = [body for _, _, body in lambdas if "#line" in body]  # ours carry the YAML line
    assert len(bodies) >= 4, "no lambdas found in the generated main.cpp"
    used = {name for name in declared if any(re.search(rf"\b{name}\b", body) for body in bodies)}
    program = STAND_INS + "".join(f"{declared[name]} *{name};\n" for name in sorted(used))
    for i, (params, returns, body) in enumerate(lambdas):
        program += f"auto lambda_{i} = []({params}) -> {returns} {{\n{body}\n}};\n"
    check = workdir / f"{main_cpp.parent.parent.name}-lambdas.cpp"
    check.write_text(program)
    compiled = subprocess.run([compiler, "-std=gnu++20", "-fsyntax-only", "-Wall", "-Werror", str(check)],
                              cwd=workdir, capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stderr[-4000:]


# -- the payload contract ------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    pass


for _tag in ("!include", "!secret", "!lambda"):
    _Loader.add_constructor(_tag, lambda loader, node: loader.construct_scalar(node))


def publishes(package: str) -> list[tuple[str, list[str], str]]:
    """(topic leaf, keys in the order the lambda sets them, lambda) of every mqtt.publish_json."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            action = value.get("mqtt.publish_json")
            if isinstance(action, dict):
                leaf = action["topic"].rsplit("/", 1)[-1]
                keys = list(dict.fromkeys(re.findall(r'root\["(\w+)"\]', action["payload"])))
                found.append((leaf, keys, action["payload"]))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(yaml.load((FIRMWARE / "packages" / package).read_text(), Loader=_Loader))
    return found


def simulated_payloads(kind: str) -> dict[str, list[dict]]:
    """What the simulated node of ``kind`` sends, per topic leaf (nothing connected)."""
    node = NODE_CLASSES[kind]("sim-node", port=1)
    sent: dict[str, list[str]] = {}
    node.publish = lambda leaf, payload, qos=0: sent.setdefault(leaf, []).append(payload)
    if kind == "door_beam":
        node.walk("in")
        node.walk("out")
    elif kind == "pir":
        node.set_motion(True)
        node.set_motion(False)
    else:
        node.place(1000.0)
        node.place(612.5)
        node.place(700.0)
    node.state()
    node.diag()
    node.battery(3.912)
    return {leaf: [json.loads(p, object_pairs_hook=dict) for p in payloads] for leaf, payloads in sent.items()}


@pytest.mark.parametrize("kind", sorted(KIND_PACKAGES))
def test_firmware_simulator_and_agent_agree_on_payloads(kind):
    firmware = publishes(KIND_PACKAGES[kind])
    simulated = simulated_payloads(kind)
    for leaf in ("event", "state"):
        (keys, lam), = [(k, lam) for l, k, lam in firmware if l == leaf]
        for body in simulated[leaf]:
            # Same keys in the same order as the firmware's lambda writes them.
            assert list(body) == keys, (kind, leaf, body, keys)
            parsed = messages.parse_message(kind, leaf, json.dumps(body).encode())
            assert isinstance(parsed, messages.BaseModel)
        model_fields = set()
        if leaf == "event":
            event_types = set(re.findall(r'"(crossing|motion|pick_up|put_back)"', lam))
            assert event_types == set(messages.EVENT_MODELS[kind])
            models = set(messages.EVENT_MODELS[kind].values())
        else:
            models = {messages.STATE_MODELS[kind]}
        for model in models:
            model_fields |= set(model.model_fields)
            required = {name for name, f in model.model_fields.items() if f.is_required()}
            assert required <= set(keys), f"the agent requires {required - set(keys)} that {kind} firmware never sends"
        # Every field the firmware sends is read by the agent (no silently ignored renames).
        assert set(keys) <= model_fields, f"{kind} {leaf}: agent ignores {set(keys) - model_fields}"


def test_diag_and_battery_contract():
    base = publishes("base.yaml")
    battery = publishes("battery.yaml")
    (diag_keys,) = [k for leaf, k, _ in base if leaf == "diag"]
    (battery_keys,) = [k for leaf, k, _ in battery if leaf == "diag"]
    fields = set(messages.Diag.model_fields)
    assert set(diag_keys) <= fields and set(battery_keys) <= fields
    sent = simulated_payloads("pir")["diag"]
    assert [list(body) for body in sent] == [diag_keys, battery_keys]
    for body in sent:
        messages.parse_message("pir", "diag", json.dumps(body).encode())


def test_models_accept_arduinojson_number_forms():
    """ArduinoJson writes 1000.0f as 1000 and may print float noise digits."""
    for text in ('{"type":"pick_up","delta_g":-312.3999939,"weight_g":1000,"items":3,"boot":7,"seq":1}',
                 '{"type":"put_back","delta_g":100,"weight_g":1100.5,"items":1,"boot":7,"seq":2}'):
        assert messages.parse_message("shelf_scale", "event", text.encode())
