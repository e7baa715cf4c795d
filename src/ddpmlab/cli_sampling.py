"""The sampling request every sampling command reads (``sample``, ``export``, ``evaluate``): the run,
which conditions, which sampler, which classifier, checked before anything is drawn."""

from __future__ import annotations

from ddpmlab.cli_checks import UsageError, check_device, check_numbers

__all__ = ["names", "open_classifier_arg", "sampling_request", "draw"]


def names(text: str, option: str) -> list[str]:
    """Comma-separated names, none empty (UsageError otherwise)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError(f"{option} is empty")
    return names


def open_classifier_arg(args, run):
    """The ``--classifier`` run (None without one)."""
    if args.classifier is None:
        if args.classifier_scale is not None:
            raise UsageError("--classifier-scale needs --classifier (a run of `ddpmlab train-classifier`)")
        return None
    if not args.labels:
        raise UsageError("--classifier needs --labels: 'all' (classes in turn) or class indices, e.g. 0,3,7")
    from ddpmlab.runs import check_classifier, open_classifier

    classifier = open_classifier(args.classifier, run.device)
    check_classifier(run, classifier)
    return classifier


def sampling_request(args, default_num: int | None = None, animation: bool = False):
    """Open the run (joining torchrun's process group first) and read the request: (run, plan,
    sampler, classifier or None, classifier scale)."""
    from ddpmlab import distributed
    from ddpmlab.runs import make_run_sampler, open_run, plan_conditions

    check_device(args.device)
    check_numbers(args)
    distributed.init(args.device)  # under torchrun each process draws its share of the seed blocks
    run = open_run(args.run, args.device)
    sampler_name = args.sampler or run.config.sample.sampler
    if args.eta is not None and sampler_name != "ddim":
        raise UsageError(f"--eta applies to the ddim sampler; this request uses {sampler_name}")
    classifier = open_classifier_arg(args, run)
    # --text without --num: one row of TEXT_PER_ROW per string in every command, not its default_num
    num = args.num if args.num or args.text else default_num
    plan = plan_conditions(run, num, args.labels, args.text, classifier, animation)
    sampler = make_run_sampler(run, args.sampler, args.steps, args.eta)
    scale = 1.0 if args.classifier_scale is None else args.classifier_scale
    return run, plan, sampler, classifier, scale


def draw(args, run, plan, sampler, classifier, scale):
    """The request's samples (None on ranks other than 0 under torchrun) and their labels."""
    from ddpmlab.runs import sample_run

    return sample_run(
        run,
        plan.num,
        sampler,
        args.guidance,
        plan.labels,
        args.seed,
        args.batch_size,
        progress=True,
        distribute=True,
        classifier=classifier,
        classifier_scale=scale,
    )
