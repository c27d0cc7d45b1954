"""Render the suite's results: benchmarks/RESULTS.md and the PNG plots."""

from __future__ import annotations

import typing as t
from pathlib import Path

Results = t.Mapping[str, t.Any]
TIMES = "\N{MULTIPLICATION SIGN}"

TOOL_LABELS = {
    "safe_migrate": "flask-safe-migrate",
    "naive": "naive (commit per statement)",
    "naive_one_txn": "naive (one transaction)",
    "alembic": "Alembic (Flask-Migrate)",
}
SHORT_LABELS = {
    "safe_migrate": "flask-safe-migrate",
    "naive": "naive",
    "naive_one_txn": "naive, one txn",
    "alembic": "Alembic",
}
COLORS = {
    "safe_migrate": "#1b7837",
    "naive": "#d6604d",
    "naive_one_txn": "#f4a582",
    "alembic": "#4393c3",
}


def label(tool: str) -> str:
    """The display name of a tool."""
    return TOOL_LABELS.get(tool, tool)


def ratio(value: float, base: float) -> str:
    """``value / base`` as ``12.3`` and a multiplication sign (``n/a`` if base is 0)."""
    if base <= 0:
        return "n/a"
    x = value / base
    return f"{x:.2f}{TIMES}" if x < 10 else f"{x:.0f}{TIMES}"


def _table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": "---", "r": "---:"}
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(marks[a] for a in align) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _provenance(results: Results, figure: str) -> list[str]:
    v = results["versions"]
    return [
        f"Command: `{results['command']}` (this figure alone: "
        f"`.venv/bin/python -m benchmarks.suite --only {figure}`). "
        f"Latency added by the fault proxy: {results['latency_ms_each_way']:g} ms "
        "each way. Versions: PostgreSQL "
        f"{v['PostgreSQL']}, {v['PgBouncer']}, Python {v['Python']}, "
        f"SQLAlchemy {v['SQLAlchemy']}, Alembic {v['Alembic']}, Flask-Migrate "
        f"{v['Flask-Migrate']}, flask-safe-migrate {v['flask-safe-migrate']}.",
        "",
    ]


def _fig_boot(results: Results) -> list[str]:
    boot = results["boot"]
    lines = ["## 1. Boot on an up-to-date database", ""]
    lines += _provenance(results, "boot")
    lines += [
        "Synthetic schema steps (a table every 10 steps, then 9 `ADD COLUMN IF NOT "
        "EXISTS`), already applied; the app boots again. Time is the whole boot "
        "(app factory, engine, migration; Python imports aside), median of the "
        "boots shown. Round trips are the Query/Sync messages the proxy counted "
        "after login. A new SQLAlchemy engine sends "
        f"{boot['first_connect_round_trips']} first-connect queries; "
        "flask-safe-migrate's migration engine skips them (it reads the server "
        "version from the login), so its up-to-date boot is its one ledger read.",
        "",
    ]
    ours = {r["n"]: r for r in boot["up_to_date"] if r["tool"] == "safe_migrate"}
    rows = []
    for r in boot["up_to_date"]:
        base = ours[r["n"]]
        rows.append(
            [
                str(r["n"]),
                label(r["tool"]),
                f"{r['seconds'] * 1000:.0f}",
                f"{r['round_trips']:.0f}",
                str(r["boots"]),
                ratio(r["seconds"], base["seconds"]),
                ratio(r["round_trips"], base["round_trips"]),
            ]
        )
    lines += _table(
        [
            "N steps",
            "tool",
            "boot ms",
            "round trips",
            "boots",
            "time ÷ flask-safe-migrate",
            "round trips ÷ flask-safe-migrate",
        ],
        rows,
        "rlrrrrr",
    )
    counts = sorted(ours)
    if len(counts) > 1:
        low, high = ours[counts[0]], ours[counts[-1]]
        lines += [
            "",
            f"flask-safe-migrate: a boot with {counts[-1]} steps takes "
            f"{high['seconds'] / low['seconds']:.2f} times the time of a boot with "
            f"{counts[0]} (goal: under 1.5; an up-to-date boot parses no SQL).",
        ]
    lines += ["", "![boot time and round trips against N](results/fig1_boot.png)", ""]
    return lines


def _fig_pending(results: Results) -> list[str]:
    pending = results["boot"]["pending"]
    lines = ["## 2. Applying N pending schema steps", ""]
    lines += _provenance(results, "boot")
    lines += [
        "The first boot of figure 1's databases, every step pending; per step.",
        "",
    ]
    ours = {r["n"]: r for r in pending if r["tool"] == "safe_migrate"}
    rows = [
        [
            str(r["n"]),
            label(r["tool"]),
            f"{r['seconds']:.2f}",
            f"{r['ms_per_step']:.1f}",
            f"{r['round_trips_per_step']:.2f}",
            ratio(r["ms_per_step"], ours[r["n"]]["ms_per_step"]),
        ]
        for r in pending
    ]
    lines += _table(
        [
            "N steps",
            "tool",
            "total s",
            "ms per step",
            "round trips per step",
            "time ÷ flask-safe-migrate",
        ],
        rows,
        "rlrrrr",
    )
    lines += ["", "![time and round trips per step](results/fig2_pending.png)", ""]
    return lines


def _fig_stall(results: Results) -> list[str]:
    stall = results["stall"]
    lines = ["## 3. Live traffic while a step waits for its lock", ""]
    lines += _provenance(results, "stall")
    lines += [
        f"Two readers and a writer on `hot` (through the proxy), a transaction "
        f"holding a lock on it for {results['sizes']['block_seconds']:g} s, and "
        "one pending `ALTER TABLE hot ADD COLUMN` booted by each tool with its "
        "defaults (naive and Alembic set no `lock_timeout`). Latency of every live "
        "query from the blocker's start until the migration finished.",
        "",
    ]
    base = next(r for r in stall if r["tool"] == "naive")
    rows = [
        [
            label(r["tool"]),
            str(r["queries"]),
            f"{r['p50_ms']:.0f}",
            f"{r['p99_ms']:.0f}",
            f"{r['max_ms']:.0f}",
            f"{r['writer_p99_ms']:.0f}",
            str(r["over_1s"]),
            f"{r['migration_seconds']:.1f}",
            ratio(r["max_ms"], base["max_ms"]),
            ratio(r["p99_ms"], base["p99_ms"]),
        ]
        for r in stall
    ]
    lines += _table(
        [
            "tool",
            "live queries",
            "p50 ms",
            "p99 ms",
            "worst ms",
            "writer p99 ms",
            "> 1 s",
            "migration s",
            "worst ÷ naive",
            "p99 ÷ naive",
        ],
        rows,
    )
    lines += ["", "![live query latency over time](results/fig3_stall.png)", ""]
    return lines


def _fig_backfill(results: Results) -> list[str]:
    fill = results["backfill"]["summary"]
    lines = [f"## 4. Backfill of {results['sizes']['backfill_rows']:,} rows", ""]
    lines += _provenance(results, "backfill")
    lines += [
        "`benchmarks/backfill_throughput.py`'s `measure()` at this latency: one "
        "plain `UPDATE` (what the naive script and an Alembic data migration run), "
        "hand-written 10,000-key batches, and `migrate.backfill`, each "
        f"{fill[0]['repetitions'] if fill else 0} times interleaved (the median "
        "run is shown). A live writer updates a random row every 10 ms through "
        "PgBouncer (without the added latency) meanwhile. The batch "
        "time column is the longest batch the ledger recorded, an upper bound of "
        "the p99 (with fewer than 100 batches they are the same).",
        "",
    ]
    rows = []
    for r in fill:
        batch = r.get("max_batch_seconds")
        rows.append(
            [
                r["method"],
                f"{r['seconds']:.2f}",
                f"{r['rows_per_second']:,.0f}",
                f"{r['throughput_ratio']:.2f}",
                str(r["batches"]),
                f"{batch * 1000:.0f}" if batch is not None else "n/a",
                f"{r['writer_p99_ms']:.1f}",
                f"{r['writer_max_ms_all_runs']:.0f}",
            ]
        )
    lines += _table(
        [
            "method",
            "seconds",
            "rows/s",
            "throughput ÷ plain UPDATE",
            "batches",
            "p99 (max) batch ms",
            "writer p99 ms",
            "writer worst ms (all runs)",
        ],
        rows,
    )
    lines += [
        "",
        "![backfill throughput and writer latency](results/fig4_backfill.png)",
    ]
    lines += [""]
    return lines


def _fig_storm(results: Results) -> list[str]:
    storm = results["storm"]
    n = storm[0]["processes"] if storm else 0
    lines = [f"## 5. Boot storm: {n} processes at once", ""]
    lines += _provenance(results, "storm")
    lines += [
        f"{n} processes boot the example app together (`python -m "
        "benchmarks.worker TOOL`: flask-safe-migrate with every phase on boot), on "
        "a fresh database and on an up-to-date one. No process is restarted. Wall "
        f"time includes the {n} Python starts on this machine; boot s is each "
        "process's own migration time.",
        "",
    ]
    ours = {r["database"]: r for r in storm if r["tool"] == "safe_migrate"}
    rows = []
    for r in storm:
        errors = "; ".join(
            f"{count}{TIMES} {msg}" for msg, count in r["errors"].items()
        )
        rows.append(
            [
                label(r["tool"]),
                r["database"].replace("_", "-"),
                f"{r['ok']}/{r['processes']}",
                f"{r['wall_seconds']:.1f}",
                f"{r['median_boot_seconds']:.2f} / {r['max_boot_seconds']:.2f}",
                str(r["round_trips"]),
                r["state"],
                str(len(r["applied_twice"])),
                ratio(r["wall_seconds"], ours[r["database"]]["wall_seconds"]),
                _escape(errors) or "-",
            ]
        )
    lines += _table(
        [
            "tool",
            "database",
            "booted",
            "wall s",
            "boot s median / max",
            "round trips",
            "state after",
            "applied twice",
            "wall ÷ flask-safe-migrate",
            "errors",
        ],
        rows,
        "llrrrrlrrl",
    )
    lines += ["", "![boot storm](results/fig5_storm.png)", ""]
    return lines


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _fig_cold(results: Results) -> list[str]:
    cold = results["cold"]
    lines = ["## 7. Cold start: import and boot CPU time, up to date", ""]
    lines += _provenance(results, "cold")
    lines += [
        "The example app (flask-safe-migrate) and its Alembic twin (Flask-Migrate's "
        "`upgrade()`), each booting in a fresh process on its up-to-date database. "
        "Import CPU is the tool's import on top of Flask, SQLAlchemy and "
        "Flask-SQLAlchemy; boot CPU is the app factory with its migration check. "
        "Process CPU seconds (`time.process_time`), medians of the runs.",
        "",
    ]
    ours = next(r for r in cold if r["tool"] == "safe_migrate")
    rows = [
        [
            label(r["tool"]),
            f"{r['import_cpu_seconds'] * 1000:.0f}",
            f"{r['boot_cpu_seconds'] * 1000:.0f}",
            f"{r['boot_seconds'] * 1000:.0f}",
            f"{r['round_trips_per_boot']:.0f}",
            str(r["runs"]),
            ratio(
                r["import_cpu_seconds"] + r["boot_cpu_seconds"],
                ours["import_cpu_seconds"] + ours["boot_cpu_seconds"],
            ),
        ]
        for r in cold
    ]
    lines += _table(
        [
            "tool",
            "import CPU ms",
            "boot CPU ms",
            "boot wall ms",
            "round trips per boot",
            "runs",
            "CPU ÷ flask-safe-migrate",
        ],
        rows,
        "lrrrrrr",
    )
    return [*lines, ""]


def _fig_soak(results: Results) -> list[str]:
    soak = results["soak"]
    sizes = results["sizes"]
    lines = ["## 6. Chaos soak", ""]
    lines += _provenance(results, "soak")
    lines += [
        f"{sizes['soak_runs']} runs per tool of the example app's full migration "
        "(7 steps: tables, a non-idempotent `ADD COLUMN`, a seed, an orphan "
        "cleanup, a unique index with de-duplication, a backfill), each on a fresh "
        "database behind its own fault proxy, which kills every connection at a "
        f"random age between {sizes['chaos_seconds'][0]:g} and "
        f"{sizes['chaos_seconds'][1]:g} s and drops the reply of one COMMIT per "
        "run (the k-th, k drawn over the COMMITs of an undisturbed run, at the "
        "same relative position for each tool). flask-safe-migrate runs "
        "`flask safe-migrate run`; naive and Alembic boot the app. A failed "
        f"process is started again, up to {sizes['soak_max_boots']} processes per "
        "run, the same rule for every tool, as a process supervisor would. "
        "*Completed*: a process exited 0. *Half-applied*: afterwards the schema "
        "and rows match neither the initial nor the expected state. *Applied "
        "twice*: the audit triggers saw a committed second seed insert or a "
        "second backfill update of a row.",
        "",
    ]
    calibration = soak["calibration"]
    checks = ", ".join(
        f"{label(tool)} {r['state']} with {r['commits_seen']} COMMITs"
        for tool, r in calibration.items()
    )
    lines += [f"Undisturbed calibration runs: {checks}.", ""]
    rows = [
        [
            label(r["tool"]),
            str(r["runs"]),
            f"{r['completed']}/{r['runs']}",
            f"{r['first_boot_ok']}/{r['runs']}",
            str(r["expected_state"]),
            str(r["half_applied"]),
            str(r["left_initial"]),
            str(r["applied_twice_runs"]),
            str(r["boots"]),
            str(r["kills"]),
            str(r["dropped_commits"]),
        ]
        for r in soak["summary"]
    ]
    lines += _table(
        [
            "tool",
            "runs",
            "completed",
            "on the first process",
            "expected state",
            "half-applied",
            "left initial",
            "runs with a step applied twice",
            "processes",
            "connections killed",
            "COMMIT replies dropped",
        ],
        rows,
    )
    lines += ["", "Why processes failed (first line of the error, counted):", ""]
    for tool, errors in soak["errors"].items():
        listed = "; ".join(f"{count}{TIMES} `{msg}`" for msg, count in errors.items())
        lines.append(f"- {label(tool)}: {listed or 'none'}")
    half = [r for r in soak["runs"] if r["state"] == "half"]
    if half:
        lines += ["", "What the half-applied runs left (first problem of each):", ""]
        for r in half[:12]:
            lines.append(f"- {label(r['tool'])}, run {r['run']}: {r['problems'][0]}")
        if len(half) > 12:
            lines.append(f"- ... {len(half) - 12} more in the JSON")
    lines += ["", "![chaos soak outcomes](results/fig6_soak.png)", ""]
    return lines


def render_markdown(results: Results) -> str:
    """The whole RESULTS.md."""
    versions = results["versions"]
    lines = [
        "# Benchmarks: flask-safe-migrate, the naive startup script and Alembic",
        "",
        f"Generated by `{results['command']}` on {results['started_at']} in "
        f"{results['total_seconds'] / 60:.1f} minutes"
        + (
            f" (plus {results['setup_seconds']:.0f} s of bootstrap and installs)"
            if results.get("setup_seconds")
            else ""
        )
        + (
            " (**quick mode: small sizes, not the published figures**)"
            if results["quick"]
            else ""
        )
        + ". Every figure was measured in this one run, on the same PostgreSQL "
        "through the same TLS, transaction-pooling PgBouncer, with a fault proxy "
        f"adding {results['latency_ms_each_way']:g} ms each way in front of it "
        "(a 10 ms round trip, like a cloud pooler). Raw numbers: "
        "[results/comparison.json](results/comparison.json).",
        "",
    ]
    lines += _table(
        ["component", "version"], [[k, v] for k, v in versions.items()], "ll"
    )
    lines += [""]
    figures = {
        "boot": (_fig_boot, _fig_pending),
        "stall": (_fig_stall,),
        "backfill": (_fig_backfill,),
        "storm": (_fig_storm,),
        "soak": (_fig_soak,),
        "cold": (_fig_cold,),
    }
    for key, renderers in figures.items():
        if key in results:
            for render in renderers:
                lines += render(results)
    lines += NOTES
    return "\n".join(lines).rstrip() + "\n"


NOTES = [
    "## Notes and limits",
    "",
    "- Round trips are the Query and Sync messages the proxy saw. The TLS and "
    "authentication exchanges of a new connection are not counted; each boot of "
    "figures 1 and 2 opens one connection, whatever the tool.",
    "- The naive script pays 3 round trips per statement (psycopg2 sends `BEGIN`, "
    "the statement, `COMMIT`); the one-transaction variant shows the best a "
    "startup script can do, and it is faster than flask-safe-migrate at applying "
    "pending steps (figure 2), which also takes its lock and writes its ledger "
    "row per step.",
    "- Baselines run with their defaults: no `lock_timeout` in the naive script "
    "or Alembic's generated `env.py` (figure 3). A careful Alembic user can set "
    "one; that is not measured here.",
    "- Figure 4's writer goes to PgBouncer without the added latency (it is the "
    "live app); its p99 during flask-safe-migrate's backfill is higher than "
    "during the single UPDATE, whose cost is instead one long stall of rows "
    "(the worst column).",
    "- Boot storm: the processes are started together, but Python's start-up "
    "spreads their first queries over a second or so on this machine, so races "
    "between them are milder than between pre-forked workers.",
    "- Chaos soak: the three tools' n-th runs go side by side, each on its own "
    "database and proxy. Because one COMMIT reply per run is always dropped, a "
    "tool without its own retries cannot finish on its first process.",
    "",
]


# ----------------------------------------------------------------------- plots


def write_plots(results: Results, out: Path) -> list[Path]:
    """One PNG per figure present in ``results``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: t.Any, name: str) -> None:
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if "boot" in results:
        rows = results["boot"]["up_to_date"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for tool in TOOL_LABELS:
            mine = sorted((r for r in rows if r["tool"] == tool), key=lambda r: r["n"])
            if not mine:
                continue
            ns = [r["n"] for r in mine]
            kw = {"label": label(tool), "color": COLORS[tool], "marker": "o"}
            axes[0].plot(ns, [r["seconds"] * 1000 for r in mine], **kw)
            axes[1].plot(ns, [r["round_trips"] for r in mine], **kw)
        for ax, title in zip(axes, ("boot wall time (ms)", "round trips"), strict=True):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("N steps (all applied)")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=8)
        save(fig, "fig1_boot.png")

        pending = results["boot"]["pending"]
        n = max((r["n"] for r in pending), default=0)
        mine = [r for r in pending if r["n"] == n]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        names = [label(r["tool"]) for r in mine]
        colors = [COLORS[r["tool"]] for r in mine]
        axes[0].barh(names, [r["ms_per_step"] for r in mine], color=colors)
        axes[0].set_title(f"ms per pending step (N={n})")
        axes[1].barh(names, [r["round_trips_per_step"] for r in mine], color=colors)
        axes[1].set_title(f"round trips per pending step (N={n})")
        axes[1].set_yticks([])
        save(fig, "fig2_pending.png")

    if "stall" in results:
        stall = results["stall"]
        fig, axes = plt.subplots(
            len(stall), 1, figsize=(10, 2.2 * len(stall)), sharex=True
        )
        for ax, r in zip(axes, stall, strict=True):
            # Plotted when the query finished: a stall is a gap, then a tall point.
            xs = [p[0] + p[1] for p in r["timeline"]]
            ys = [p[1] * 1000 for p in r["timeline"]]
            ax.scatter(xs, ys, s=4, color=COLORS[r["tool"]])
            ax.set_yscale("log")
            ax.set_ylim(5, 20000)
            ax.set_title(f"{label(r['tool'])}: live query latency (ms)", fontsize=9)
            ax.grid(True, alpha=0.3)
        axes[-1].set_xlabel("query finished, s after the blocking transaction began")
        save(fig, "fig3_stall.png")

    if "backfill" in results:
        fill = results["backfill"]["summary"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        names = [r["method"] for r in fill]
        axes[0].barh(names, [r["throughput_ratio"] for r in fill], color="#777")
        axes[0].set_title("throughput ÷ one plain UPDATE")
        axes[1].barh(names, [r["writer_p99_ms"] for r in fill], color="#777")
        axes[1].set_title("live writer p99 (ms)")
        axes[1].set_yticks([])
        save(fig, "fig4_backfill.png")

    if "storm" in results:
        storm = results["storm"]
        fig, ax = plt.subplots(figsize=(10, 3.8))
        xs = list(range(len(storm)))
        ax.bar(
            xs,
            [r["wall_seconds"] for r in storm],
            color=[COLORS[r["tool"]] for r in storm],
        )
        for x, r in zip(xs, storm, strict=True):
            ax.text(
                x,
                r["wall_seconds"],
                f"{r['ok']}/{r['processes']} ok",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xticks(
            list(xs),
            [f"{SHORT_LABELS[r['tool']]}\n{r['database']}" for r in storm],
            fontsize=7,
        )
        ax.set_ylabel("wall s, all processes")
        save(fig, "fig5_storm.png")

    if "soak" in results:
        summary = results["soak"]["summary"]
        fig, ax = plt.subplots(figsize=(10, 4.2))
        names = [label(r["tool"]) for r in summary]
        first = [r["first_boot_ok"] for r in summary]
        later = [r["completed"] - r["first_boot_ok"] for r in summary]
        failed = [r["runs"] - r["completed"] for r in summary]
        ax.barh(names, first, color="#1b7837", label="completed, first process")
        ax.barh(
            names, later, left=first, color="#a6dba0", label="completed after restarts"
        )
        ax.barh(
            names,
            failed,
            left=[a + b for a, b in zip(first, later, strict=True)],
            color="#d6604d",
            label="not completed",
        )
        for y, r in enumerate(summary):
            ax.text(
                r["runs"] + 0.5,
                y,
                f"half-applied {r['half_applied']}, twice {r['applied_twice_runs']}",
                va="center",
                fontsize=8,
            )
        ax.set_xlim(0, max((r["runs"] for r in summary), default=1) * 1.45)
        ax.set_xlabel("runs")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
        save(fig, "fig6_soak.png")
    return written
