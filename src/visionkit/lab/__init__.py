"""visionkit.lab: experiments that turn handbook claims into measured results.

``demo`` is the main job (``visionkit demo`` / ``make demo``): RetinaNet vs Faster R-CNN on ``shapes``,
COCO/VOC evaluation, NMS vs Soft-NMS on the crowded split, anchors, speed, and an HTML ``report``.

The executable handbook (``visionkit lab list | run §N|name [--quick] | all | errata``):

* :mod:`~visionkit.lab.experiments` — one module per handbook topic; each experiment measures, draws its
  figures and returns :class:`~visionkit.lab.results.Findings` whose verdicts are *computed* by
  :func:`~visionkit.lab.results.judge` from the measurement (a claim quoted verbatim from the handbook with
  an English rendering, the criterion, the measured value). A ``"fact"`` claim that does not hold is an
  erratum and carries the computed correction.
* :mod:`~visionkit.lab.registry` — the experiments by topic: ``experiment("§8")``, ``select("§16")``.
* :mod:`~visionkit.lab.runner` — seeded, one thread by default, figures saved as PNG, results cached under
  ``out/cache`` by code version (the experiment's source and every visionkit module it imports), so
  ``lab all`` reruns only what changed.
* :mod:`~visionkit.lab.book` — ``out/index.html``: the handbook's contents, a verdict summary, the errata,
  each topic with its claims, tables and figures (template ``templates/book.html.j2``).

The lab has no training loop of its own: classification experiments train through
:class:`visionkit.engine.trainer.Trainer` (``experiments._common.fit``); the others call the library.

Adding an experiment is one new file, ``src/visionkit/lab/experiments/sNN_topic.py``::

    from visionkit.lab.registry import register
    from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
    from visionkit.lab.runner import LabContext

    CLAIM = Claim("§18", "<the handbook's words, verbatim>", "<English rendering>", kind="fact")

    def judge_thing(measured: float) -> Verdict:          # pure: tested on fixed numbers both ways
        return judge(CLAIM, "<criterion in words>", measured, holds=measured > 0.5,
                     correction=f"<the right value: {measured:.3f}>")

    @register("yolo-head", "§18", "<one line for the book>", errata=True)
    def yolo_head(ctx: LabContext) -> Findings:
        measured = ...                                    # small: ctx.quick / ctx.pick(quick, full)
        ctx.figure(figure, "name", "caption")             # a matplotlib figure → PNG in the book
        return Findings([judge_thing(measured)], tables=[Table.of("title", rows)])

It is found automatically (every module of the package whose name does not start with ``_``); the tests
run it in quick mode and check that each quote occurs in the handbook. Add a both-ways test of the judge
function beside the others (``tests/lab/test_lab_experiments_verdicts*.py``); a new erratum is added to
``tests/lab/test_lab_experiments_errata.py``.
"""

from visionkit.lab.registry import experiment, experiments, register, select

__all__ = ["experiment", "experiments", "register", "select"]
