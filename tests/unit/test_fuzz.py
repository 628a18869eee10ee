"""Fuzzing the loaders: random YAML configs and JSON Lines records load or raise SoftPromptError, nothing else.

hypothesis draws documents of three kinds: arbitrary text, YAML dumps of
random data shaped like a config (real section and key names, values of any
type), and shipped configs with a few characters changed. Records are random
JSON values, records shaped like each task's with random field values, and
random bytes. Anything but a clean load or SoftPromptError (ConfigError is
one) fails the test, with hypothesis's smallest example.
"""

import json
import re
import string
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, TASK_NAMES, smoke_config
from softprompt.config import Config, load_config
from softprompt.data import check_jsonl
from softprompt.errors import SoftPromptError
from softprompt.tasks import TASKS, record_problem

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "qna",
            "sum",
            "tx",
            "words",
            "text",
            "vocab",
            "random",
            "fp16",
            "cpu",
            "5e-5",
            "0",
            "-1",
            "builtin:tiny-gpt2",
            "linear",
            "skip",
            "",
        ]
    ),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=15)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
yaml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)

KEYS = {
    "model": [
        "name_or_path",
        "prompt_length",
        "init",
        "init_text",
        "keep_dropout",
        "revision",
        "trust_remote_code",
        "promt_length",
    ],
    "data": [
        "dataset",
        "dataset_config",
        "files",
        "max_train_examples",
        "max_eval_examples",
        "max_source_tokens",
        "max_target_tokens",
        "carve_validation",
        "carve_test",
        "carve_seed",
        "group_by_length",
    ],
    "train": [
        "lr",
        "weight_decay",
        "betas",
        "eps",
        "batch_size",
        "grad_accum_steps",
        "max_grad_norm",
        "epochs",
        "save_every",
        "log_every",
        "eval_batch_size",
        "seed",
        "schedule",
        "warmup_steps",
        "device",
        "precision",
        "gradient_checkpointing",
        "on_nonfinite",
        "output_dir",
        "lrr",
    ],
}
config_like = st.fixed_dictionaries(
    {},
    optional={
        "task": st.one_of(st.sampled_from(["qna", "sum", "tx", "summ"]), yaml_values),
        "run_name": yaml_values,
        **{
            section: st.one_of(st.dictionaries(st.sampled_from(keys), yaml_values, max_size=5), yaml_values)
            for section, keys in KEYS.items()
        },
        "extra": yaml_values,
    },
)
SHIPPED = sorted(p.read_text(encoding="utf-8") for p in (ROOT / "configs").rglob("*.yaml"))


@st.composite
def mutated_config(draw):
    text = draw(st.sampled_from(SHIPPED))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(alphabet=string.printable + "\u00e9\u0000", max_size=3)) + text[at + 1 :]
    return text


yaml_documents = st.one_of(
    st.text(max_size=200),
    config_like.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    mutated_config(),
)


def loads_or_refuses(fn, *args):
    """(what fn returned, None) or (None, the SoftPromptError's message); any other exception fails the test."""
    try:
        return fn(*args), None
    except SoftPromptError as err:
        return None, str(err)


@FUZZ
@given(
    document=yaml_documents,
    overrides=st.lists(
        st.one_of(
            st.text(max_size=20),
            st.tuples(
                st.sampled_from(["train.lr", "model.init", "data.files", "task", "x.y", "train.betas", "run_name"]),
                st.text(max_size=12),
            ).map("=".join),
        ),
        max_size=2,
    ),
)
def test_random_yaml_configs_load_or_raise_config_errors(document, overrides):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_text(document, encoding="utf-8", errors="surrogatepass")
        cfg, error = loads_or_refuses(load_config, path, overrides)
    if error is not None:  # a refusal names where the problem is: the file, or the --set override
        assert error.startswith((f"{path}: ", "--set ")), error
    else:  # a config that loads is one the training code can use as it stands
        assert isinstance(cfg, Config) and cfg.task.name in TASKS
        assert cfg.train.lr > 0 and cfg.train.batch_size >= 1 and cfg.model.prompt_length >= 1 and cfg.train.epochs >= 1


def test_pathological_yaml_is_a_config_error(tmp_path):
    for name, text in [("deep", "[" * 20_000), ("nul", "task: qna\x00\n"), ("tab", "task:\tqna\n\tmodel: 1\n")]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(SoftPromptError) as info:
            load_config(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def _first_training_record(task: str) -> dict:
    cfg = load_config(smoke_config(task))
    with open(cfg.data.files["train"], encoding="utf-8") as f:
        return json.loads(f.readline())


VALID = {task: _first_training_record(task) for task in TASK_NAMES}  # one usable record of every task


def record_like(task):
    """Records with the task's field names (nested where the schema nests) and values of any type."""
    paths = [field.removesuffix("[]").split(".") for field in TASKS[task].required]
    fields = sorted({p[0] for p in paths} | set(VALID[task]) | {"id"})
    nested = sorted({p[1] for p in paths if len(p) > 1} | {"answer_start"})
    inner = st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(nested),
            st.one_of(json_values, st.lists(st.text(max_size=8), max_size=3)),
            max_size=3,
        ),
    )
    return st.dictionaries(st.sampled_from(fields), inner, max_size=len(fields))


@st.composite
def near_valid(draw, task):
    """A valid record of the task with one field replaced by any JSON value, or dropped."""
    record = json.loads(json.dumps(VALID[task]))
    outer = draw(st.sampled_from(sorted(record)))
    holder, key = record, outer
    if isinstance(record[outer], dict) and draw(st.booleans()):
        holder, key = record[outer], draw(st.sampled_from(sorted(record[outer])))
    if draw(st.booleans()):
        holder[key] = draw(st.one_of(json_values, st.text(max_size=10), st.lists(st.text(max_size=5), max_size=2)))
    else:
        del holder[key]
    return record


def records(task):
    return st.one_of(json_values, near_valid(task), near_valid(task), st.just(VALID[task]), record_like(task))


tasks_and_records = st.sampled_from(sorted(TASKS)).flatmap(lambda t: st.tuples(st.just(t), records(t)))


MISSING = object()


def value_at(record, dotted):
    """The value at a dotted path of nested objects, or MISSING."""
    for part in dotted.split("."):
        if not isinstance(record, dict) or part not in record:
            return MISSING
        record = record[part]
    return record


def assert_problem_is_real(problem, record, task):
    field = re.fullmatch(r"(missing field|field) '([^']+)'(.*)", problem)
    if problem.startswith("expected a JSON object"):
        assert not isinstance(record, dict), problem
    elif problem == "empty target text":
        assert not task.target(record).strip(), problem
    elif field and field[1] == "missing field":
        assert value_at(record, field[2]) is MISSING, problem
    elif field and "list of strings" in field[3]:
        value = value_at(record, field[2])
        assert not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)), problem
    elif field and field[3].startswith(" must be a string"):
        value = value_at(record, field[2])
        assert value is not MISSING and not isinstance(value, str), problem
    else:
        raise AssertionError(f"an unexpected problem text: {problem!r}")


@FUZZ
@given(task_and_record=tasks_and_records)
def test_random_records_are_usable_or_have_a_problem(task_and_record):
    task, record = task_and_record
    problem = record_problem(TASKS[task], record)
    if problem is not None:  # the problem it names is really there
        assert_problem_is_real(problem, record, TASKS[task])
    else:  # then every piece the task reads is a string, and the target is not empty
        head, body, tail = TASKS[task].pieces(record)
        assert all(isinstance(p, str) for p in (head, body, tail)) and TASKS[task].target(record).strip()
        assert all(isinstance(r, str) for r in TASKS[task].references(record))


lines = st.one_of(
    tasks_and_records.map(lambda tr: json.dumps(tr[1], ensure_ascii=False).encode("utf-8")),
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", errors="surrogatepass")),
    st.sampled_from([b"", b"   ", b'{"a": 1', b'"\\ud800"', b'{"context": "\\udfff"}', b"\xef\xbb\xbf{}", b"[" * 5000]),
)


@FUZZ
@given(task=st.sampled_from(sorted(TASKS)), body=st.lists(lines, max_size=5))
def test_random_jsonl_files_load_or_raise_softprompt_errors(task, body):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        body = [line.replace(b"\n", b" ") for line in body]
        path.write_bytes(b"\n".join(body))
        count, _ = loads_or_refuses(check_jsonl, path, TASKS[task])
    if count is not None:  # accepted: then every line is UTF-8, and every line not blank is one record
        assert count == sum(1 for line in body if line.decode("utf-8").strip())
