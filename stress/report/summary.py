"""``stress show RUN``: success per perturbation and severity, with 95 % Wilson intervals, against the
clean baseline on the same init states."""

from __future__ import annotations

from dataclasses import dataclass

from stress.core.metrics import wilson_interval
from stress.store import RunStore


@dataclass
class SummaryRow:
    policy: str
    setting: str  # 'direct', 'best-of-8 average', plus policy options
    perturbation: str
    severity: int
    episodes: int
    errors: int
    successes: int
    rate: float
    low: float
    high: float
    clean_rate: float | None  # clean success on the same (task, init state, seed), when the run has it
    clean_pairs: int


def summarise(store: RunStore) -> list[SummaryRow]:
    rows = store.query(
        """
        WITH valid AS (SELECT * FROM episodes WHERE error IS NULL),
        clean AS (SELECT suite, task_id, init_index, policy, setting, seed, success FROM valid WHERE perturbation = 'clean')
        SELECT e.policy, e.setting, e.perturbation, e.severity,
               count(*) AS episodes,
               count(*) FILTER (WHERE e.error IS NOT NULL) AS errors,
               count(*) FILTER (WHERE e.success AND e.error IS NULL) AS successes,
               avg(c.success::INT) AS clean_rate,
               count(c.success) AS clean_pairs
        FROM episodes e
        LEFT JOIN clean c USING (suite, task_id, init_index, policy, setting, seed)
        GROUP BY e.policy, e.setting, e.perturbation, e.severity
        ORDER BY e.policy, e.setting != 'direct', e.setting, e.perturbation = 'clean' DESC, e.perturbation, e.severity
        """
    )
    out = []
    for r in rows:
        valid = r["episodes"] - r["errors"]
        low, high = wilson_interval(r["successes"], valid)
        out.append(
            SummaryRow(
                policy=r["policy"], setting=r["setting"], perturbation=r["perturbation"], severity=r["severity"],
                episodes=r["episodes"], errors=r["errors"], successes=r["successes"],
                rate=r["successes"] / valid if valid else float("nan"), low=low, high=high,
                clean_rate=None if r["perturbation"] == "clean" or r["clean_rate"] is None else float(r["clean_rate"]),
                clean_pairs=r["clean_pairs"],
            )
        )
    return out


def error_counts(store: RunStore) -> list[dict]:
    return store.query(
        "SELECT split_part(error, ':', 1) AS kind, count(*) AS n, any_value(error) AS example FROM episodes WHERE error IS NOT NULL GROUP BY 1 ORDER BY 2 DESC"
    )
