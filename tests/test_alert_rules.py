"""``contrib/prometheus/alerts.yml``: it loads, it is well formed, and it names only what chronod
exports.

Every run checks the YAML shape of each rule and, in each expression, the brackets, the functions,
the metric names (against the families :mod:`tests.test_metrics` pins), the label names each
metric has and the ``outcome`` values runs can end with. Where ``promtool`` is on PATH (Debian's
``prometheus`` package ships it), ``promtool check rules`` parses the file as Prometheus will.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chronod.store.base import Outcome
from tests.test_metrics import FAMILIES

RULES = Path(__file__).resolve().parent.parent / "contrib" / "prometheus" / "alerts.yml"
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
SEVERITIES = {"page", "ticket"}
DURATION = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|y))+")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GROUPING = ("by", "without", "on", "ignoring", "group_left", "group_right")
FUNCTIONS = {
    # aggregations
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp_max", "clamp_min", "delta",
    "deriv", "floor", "histogram_quantile", "increase", "irate", "label_replace", "max_over_time",
    "min_over_time", "avg_over_time", "sum_over_time", "count_over_time", "last_over_time",
    "predict_linear", "rate", "resets", "round", "scalar", "sort", "sort_desc", "time",
    "timestamp", "vector",
}  # fmt: skip
TARGET_LABELS = {"instance"}  # added by the scrape (chronod's own "job" label needs honor_labels)


def exported_series() -> dict[str, set[str]]:
    """Every series name chronod exports -> its label names."""
    series: dict[str, set[str]] = {}
    for name, kind, labels in FAMILIES:
        if kind == "histogram":
            series[f"{name}_bucket"] = {*labels, "le"}
            series[f"{name}_sum"] = set(labels)
            series[f"{name}_count"] = set(labels)
        else:
            series[name] = set(labels)
    return series


def balanced(text: str) -> bool:
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for char in text:
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def expr_problems(expr: str) -> list[str]:
    """What is wrong with one PromQL expression (empty when nothing is found)."""
    series = exported_series()
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string contents are not syntax
    if not balanced(text):
        return [f"unbalanced brackets in {expr!r}"]
    problems, used = matcher_problems(expr, series), set()
    text = re.sub(r"\{[^{}]*\}|\[[^\[\]]*\]", " ", text)  # label matchers, ranges, subqueries
    groupings = re.findall(rf"\b(?:{'|'.join(GROUPING)})\s*\(([^()]*)\)", text)
    text = re.sub(rf"\b(?:{'|'.join(GROUPING)})\s*\([^()]*\)", " ", text)
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        name, call = match.groups()
        if call:
            problems += [] if name in FUNCTIONS else [f"unknown function {name}()"]
        elif name in series:
            used.add(name)
        elif name.lower() not in KEYWORDS:
            problems.append(f"{name} is not a metric chronod exports")
    if not used:
        problems.append(f"no chronod metric in {expr!r}")
    labels = set().union(*(series[name] for name in used)) if used else set()
    for group in groupings:
        for label in filter(None, (part.strip() for part in group.split(","))):
            if label not in labels:
                problems.append(f"grouping by {label!r}, a label none of {sorted(used)} has")
    return problems


def matcher_problems(expr: str, series: dict[str, set[str]]) -> list[str]:
    """Label matchers naming labels the metric lacks, or outcomes no run ends with."""
    problems = []
    outcomes = {outcome.value for outcome in Outcome}
    for name, body in re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^{}]*)\}", expr):
        for label, value in re.findall(r'(\w+)\s*(?:=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', body):
            if label not in series.get(name, set()):
                problems.append(f"{name} has no label {label!r}")
            elif label == "outcome" and not set(value.split("|")) <= outcomes:
                problems.append(f"outcome {value!r}: runs end {sorted(outcomes)}")
    return problems


def rule_problems(rule: dict[str, Any]) -> list[str]:
    """What is wrong with one alerting rule besides its expression."""
    name = rule.get("alert")
    problems = [f"unknown key {key!r}" for key in sorted(set(rule) - RULE_KEYS)]
    if not isinstance(name, str) or not re.fullmatch(r"Chronod[A-Z]\w+", name):
        problems.append(f"alert name {name!r}: expected ChronodSomething")
    if not isinstance(rule.get("expr"), str):
        return [*problems, "expr missing or not a string"]
    if "for" in rule and not DURATION.fullmatch(str(rule["for"])):
        problems.append(f"for: {rule['for']!r} is not a duration")
    labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
    if labels.get("severity") not in SEVERITIES:
        problems.append(f"labels.severity must be one of {sorted(SEVERITIES)}")
    if not all(isinstance(v, str) for v in (*labels.values(), *annotations.values())):
        problems.append("label and annotation values must be strings")
    if not annotations.get("summary"):
        problems.append("annotations.summary missing")
    problems += template_problems(rule["expr"], " ".join(map(str, annotations.values())))
    return problems


def template_problems(expr: str, templates: str) -> list[str]:
    """``{{ }}`` that do not pair, or ``$labels.X`` no metric of the expression carries."""
    if templates.count("{{") != templates.count("}}"):
        return ["unbalanced {{ }} in annotations"]
    series = exported_series()
    names = set(re.findall(r"[a-zA-Z_:][\w:]*", expr)) & set(series)
    labels = set().union(TARGET_LABELS, *(series[name] for name in names))
    return [
        f"annotations use $labels.{label}, which the expression does not carry"
        for label in re.findall(r"\$labels\.(\w+)", templates)
        if label not in labels
    ]


def load_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    assert set(document) == {"groups"}
    rules: list[dict[str, Any]] = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        assert isinstance(group["name"], str)
        assert group["name"]
        rules += group["rules"]
    return rules


def test_the_alert_rules_are_well_formed_and_name_what_chronod_exports() -> None:
    rules = load_rules()
    names = [rule.get("alert") for rule in rules]
    assert len(names) == len(set(names)), "alert names repeat"
    found = {
        str(rule.get("alert")): [*rule_problems(rule), *expr_problems(str(rule.get("expr")))]
        for rule in rules
    }
    assert {name: problems for name, problems in found.items() if problems} == {}
    assert len(rules) >= 12


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("time() - chronod_job_last_sucess_timestamp_seconds > 60", "not a metric chronod"),
        ("sum(rate(chronod_runs_total[5m])", "unbalanced"),
        ('chronod_queue_depth{job="a"} > 1', "has no label 'job'"),
        ('increase(chronod_runs_total{outcome="fail"}[1h]) > 0', "outcome 'fail'"),
        ("max by (queue) (chronod_job_paused) == 1", "grouping by 'queue'"),
        ("histogramquantile(0.9, chronod_start_lateness_seconds_bucket) > 1", "unknown function"),
        ("vector(1) > 0", "no chronod metric"),
    ],
)
def test_the_rule_check_catches(expr: str, problem: str) -> None:
    assert any(problem in found for found in expr_problems(expr)), expr_problems(expr)


def test_the_rule_check_catches_a_template_without_its_label() -> None:
    rule = {
        "alert": "ChronodStoreDown",
        "expr": "chronod_store_up == 0",
        "labels": {"severity": "page"},
        "annotations": {"summary": "{{ $labels.queue }} down"},
    }
    assert rule_problems(rule) == [
        "annotations use $labels.queue, which the expression does not carry"
    ]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout
