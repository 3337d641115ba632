"""A successful run ends by saying which tables and figures exist, where, and how to open the
report (ddae.report.run_summary, the Snakefile's onsuccess)."""

from __future__ import annotations

from ddae.report.run_summary import run_summary

TARGETS = [f"results/table{n}.{ext}" for n in (2, 3, 5) for ext in ("csv", "md")]
TARGETS += [f"results/figure{n}.{ext}" for n in (2, 3) for ext in ("png", "pdf")]


def test_summary_lists_what_exists_and_how_to_open_the_report(tmp_path):
    (tmp_path / "results").mkdir()
    for name in ("table3.md", "table3.csv", "table5.md", "figure2.png", "figure2.pdf"):
        (tmp_path / "results" / name).write_text("x")
    text = run_summary(TARGETS, tmp_path, "tests/smoke")
    assert "tables and figures are in tests/smoke/results/" in text
    assert "tables  (2): table3, table5" in text and "figures (1): figure2" in text
    assert "start with: tests/smoke/results/table3.md" in text
    assert "snakemake --directory tests/smoke --report report.html" in text
    assert "(writes tests/smoke/report.html;" in text
    assert "snakemake --directory tests/smoke --summary" in text
    (tmp_path / "results" / "findings.md").write_text("x")
    with_findings = run_summary([*TARGETS, "results/findings.md"], tmp_path, "tests/smoke")
    assert "start with: tests/smoke/results/findings.md" in with_findings
    plain = run_summary(TARGETS, tmp_path)
    assert (
        "are in results/" in plain
        and "snakemake --report report.html  (writes report.html;" in plain
    )


def test_an_absolute_directory_is_shown_relative_to_the_shell(tmp_path, monkeypatch):
    workdir = tmp_path / "tests" / "smoke"
    (workdir / "results").mkdir(parents=True)
    monkeypatch.setenv("PWD", str(tmp_path))
    text = run_summary(TARGETS, workdir, str(workdir))
    assert "snakemake --directory tests/smoke --summary" in text
