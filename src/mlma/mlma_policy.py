"""The MLMA policy: re-train where a re-training is expected to pay, within a compute budget.

A re-training is worth its cost when the new model will forecast better than the serving one. Three kinds of
evidence say when that is likely, and the policy combines them into an **expected gain** per stream, learned
from what the fleet's own re-trainings paid (:class:`mlma.monitor.gain.GainModel`):

- **age**: models age slowly, and a mediocre first model is never seen by a test against itself; a slow,
  staggered refresh (every ``refresh_ticks``) collects that diffuse value, as a schedule does;
- **degradation**: the stream's new losses are relevantly and significantly worse than its own reference
  (:func:`mlma.monitor.degradation_test`, newest tick and recent window);
- **bias**: the stream's mean signed error moved away from its reference (:func:`mlma.monitor.bias_shift_test`),
  which catches level drops that absolute losses hide on count data.

Each tick the tests' p-values are combined per stream (Bonferroni) and controlled across the fleet
(Benjamini-Hochberg at ``alpha``); a rejection is a *trigger* and re-trains the stream. An opt-in **CUSUM**
(``cusum_threshold``, :class:`mlma.monitor.cusum.CUSUM`) adds triggers where a stream's loss, relative to its
reference level, has accumulated an excess over ``delta`` beyond the threshold: a rise's size and duration
rather than its significance (off by default: it did not beat the tests alone on the tuning seeds). The
**skill** trigger (``skill_margin``, opt-in, :mod:`mlma.monitor.skill`) adds triggers where the serving
model's error is significantly more than ``1 + skill_margin`` times the seasonal naive's on the same ticks (a
paired test, its own BH family): a model mediocre from day one, which a test against its own reference never
sees; after a lost challenger it is silent until the next model (off by default: it won on the tuning seeds by
0.03-0.06 points but made two real panels significantly worse, docs/results.md). An opt-in **common-shock
hold** (``common_shock``, :mod:`mlma.monitor.shock`) holds the triggers of a tick on which many streams trigger
at once until the ticks after it confirm them: a shock common to many streams (a holiday) is no reason to
re-train on it. The **growth** trigger
(``growth=2``, on by default, :mod:`mlma.monitor.growth`) re-trains a model fitted on part of a capped training
window (a stream launched lately) once a re-training would use ``growth`` times its rows. An opt-in
**Page-Hinkley** trigger (``page_hinkley``, :mod:`mlma.monitor.page_hinkley`) adds triggers where a stream's
scaled losses have accumulated an excess over their mean since the model serves (off by default: it helped on
the simulator and made real panels worse, one significantly). The refresh
re-trains streams whose model reached ``refresh_ticks`` ticks of age, staggered over the first period; while the fleet's
learned gain of such a refresh is below ``min_gain`` the refresh slows down ``explore_factor`` times (it keeps
exploring, so the evidence can turn). Tests only *add* re-trainings to the refresh. With a ``budget`` the policy
instead spends that many re-trainings per tick (a number, or a share of the fleet) as a staggered schedule
served at once, to which strong triggers are added (``backbone="schedule"``), or on the highest expected
gains (``backbone="gain"``). The default has neither budget nor refresh: strict triggers (BH at
``alpha=0.01``) and the growth trigger, which on the tuning seeds sat below the periodic frontier at their
own count.

Whatever the mode, an **age backstop** re-trains a stream whose serving model is ``max_age`` ticks old (365
by default: a year of daily ticks), served at once: a model whose challengers keep losing on a few ticks of
judgement would otherwise serve for years (vic-elec's first model served all 1,069 days). The first
backstop is staggered by stream over the second half of ``max_age``, so that a fleet launched together is not
re-trained at once and no model is refreshed younger than half the backstop age.

Every stagger (the budget schedule's phase, the refresh's and the backstop's first offset) comes from the
stream's **identity**, its ``unique_id`` (:func:`stream_slots`, a hash), never from its index: the backtest
numbers streams in sorted order and a live store in the order they arrived, so an index-based phase scheduled
a zone launched later at other ticks live than in the backtest, and the replay differed. Hashing spreads the
phases evenly in expectation but not exactly: a tick's share of the schedule varies as a binomial count
(with 40 streams and a period of 10, about 4 +- 2 a tick).

Per stream the policy keeps a **reference**: the loss batches of the serving version's first ticks (the stream
is *warming up* until there are ``warmup_ticks`` of them), rolled forward as later ticks finish a probation of
``probation_ticks``. Admission does not depend on test outcomes (a reference that admits only ticks that
passed its tests drifts low and triggers more and more under no change); batches flagged by the data-quality
checks (:mod:`mlma.quality`) or marked abnormal never enter it. After a lost challenger the reference is
re-based on the recent ticks: the re-training did not help, so the present is the stream's normal.

Every decision is explained: the reason names the trigger or the refresh, the p-value and the expected gain.
Escalations for the engineer: data-quality problems (no re-training on broken data), a stream that keeps
triggering (``repeat_limit`` triggers within ``repeat_window`` ticks), a stream gone silent.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import numbers

import numpy as np

from mlma.escalations import Escalation
from mlma.monitor import degradation_test, fdr_control
from mlma.monitor.bias import bias_shift_test
from mlma.monitor.cusum import CUSUM
from mlma.monitor.degradation import _as_loss_matrix, _masked_block_means, _test_block_means
from mlma.monitor.gain import GainModel, decision_features
from mlma.monitor.growth import HistoryGrowth
from mlma.monitor.page_hinkley import PageHinkley
from mlma.monitor.shock import CommonShockHold
from mlma.monitor.losses import forecast_level
from mlma.monitor.skill import SeasonalNaive, SkillTest
from mlma.params import PARAMETERS
from mlma.policy import LOSSES, Decision, Policy, TickObservation, Verdict
from mlma.project import MAX_POLICY_TICKS
from mlma.quality import check_batch

#: The test needs at least this many reference blocks (ticks); see :func:`mlma.monitor.degradation_test`.
MIN_REFERENCE_TICKS = 4

#: The relative loss's floor, as a share of the level the stream's actuals normally have: a tick whose mean
#: forecast is below a tenth of that is divided by the tenth instead (a near-zero forecast of an intermittent
#: stream would otherwise make every error look enormous).
RELATIVE_FLOOR = 0.1


def stream_slots(ids) -> np.ndarray:
    """Each stream's fixed place in ``[0, 1)``, from its identity (``unique_id``) alone: the first 8 bytes
    of its BLAKE2b hash (53 bits, exact in a float). The same in every run, process and store, whatever the
    stream's index; a phase in a period of ``p`` ticks is ``floor(slot * p)``.

    >>> a, b = stream_slots(["zone-1", "zone-2"]), stream_slots(["zone-2", "zone-1"])
    >>> bool((a == b[::-1]).all())  # the identity decides, not the position
    True
    >>> # About a tenth per phase: 1000 x 0.1 = 100, sd 9.5; within three sd.
    >>> bool(((stream_slots(range(1000)) * 10) // 1 == 3).sum() in range(71, 130))
    True
    """
    out = np.array([int.from_bytes(hashlib.blake2b(str(u).encode(), digest_size=8).digest(), "big") >> 11
                    for u in ids], dtype=np.float64)
    return out / 2.0 ** 53


#: Prior coefficients of the gain model (see :data:`mlma.monitor.gain.FEATURES`): a model at refresh age
#: gains about 2 %, strong evidence of degradation or bias about 10 % more.
DEFAULT_GAIN_PRIOR = (0.0, 0.02, 0.10, 0.10)


class MLMAPolicy(Policy):
    """Re-train where the expected gain is highest: tests, an age-based refresh, a budget; see the module
    docstring.

    Parameters
    ----------
    alpha
        False discovery rate of the triggers across the streams tested in one tick (or the per-family level
        for Bonferroni). A trigger only starts a challenger, which must still hold its own against the
        champion before it serves, so a false trigger costs one fit.
    delta
        Relevance margin of the degradation test: H0 is "current mean loss <= (1 + delta) x reference mean
        loss"; 0.05 means a rise of under 5 % is not worth a re-training.
    fdr
        ``"bh"`` (Benjamini-Hochberg), ``"by"`` (Benjamini-Yekutieli), ``"bonferroni"`` or ``"none"``.
    reference_ticks
        How many ticks of losses the reference holds (at least 4); default: two weekly cycles of sub-daily
        data (14 daily ticks), otherwise at least 48 losses and two seasons.
    warmup_ticks
        Ticks of a new version's losses needed before its stream is tested: at least 4 (the test's minimum
        number of reference blocks); default: at least one season and 4 ticks.
    cooldown_ticks
        Ticks without a new trigger after a re-training attempt.
    budget
        Re-trainings per tick: a whole number >= 1, or a share of the streams with a model in (0, 1). With
        ``backbone="schedule"`` it is spent as a staggered schedule: each stream refreshed every
        ``1 / budget`` ticks (``n / budget`` for a number) at its own phase (``floor(slot * period)``, from
        its identity: :func:`stream_slots`, the same in a backtest and live) and served at once, triggers with
        an expected gain of at least ``min_gain`` added as challengers. With ``backbone="gain"`` it goes to
        the highest expected gains among streams whose expected gain is at least ``min_gain`` or whose tests
        triggered. ``None`` (default): no budget; every trigger (and every due refresh) re-trains.
    refresh_ticks
        Without a budget: age (in ticks) at which a model is refreshed. Default ``0``: no refresh (tests
        only; chosen on the tuning seeds, see docs/results.md). ``None``: 28 daily ticks of sub-daily data,
        4 ticks otherwise; it is also the age unit of the gain model's features.
    min_gain
        Smallest expected gain worth a re-training (with a budget), and the smallest learned gain of a refresh
        that keeps the refresh at its pace (without one).
    explore_factor
        While the learned gain of a refresh is below ``min_gain``, models are refreshed at this many times
        ``refresh_ticks`` only (exploration, so that the evidence can turn).
    gain_prior, gain_prior_strength
        The gain model's prior coefficients and their weight in realised gains (see
        :class:`mlma.monitor.gain.GainModel`).
    bias_test
        Also test the mean signed error (needs the signed errors in the observation).
    loss
        The loss whose mean is tested and on which challengers are judged: ``"absolute"`` (default),
        ``"squared"`` or ``"relative"``. ``"relative"`` divides each tick's absolute errors (and, for the bias
        test, its signed errors) by the tick's forecast level, the mean of the served forecasts
        (:func:`mlma.monitor.losses.relative_loss`), floored at ``RELATIVE_FLOOR`` (0.1) times the level the
        stream's actuals normally have, so that a near-zero forecast of an intermittent stream does not make
        its errors explode. On count data the absolute error of even a perfect forecast grows with the volume
        (a promotion the model knows about raised a perfect forecast's mean absolute error 1.15-1.42 times in
        the simulator, beyond the 5 % margin); relative to the forecast's level it does not
        (docs/results-drivers.md). A change the model did not forecast still counts: the forecast keeps its
        old level, so the denominator stays where it was and the error grows. Challengers are judged on the
        same loss with a common denominator, the serving model's forecast level, so that neither side gains
        by forecasting high. For data that take both signs (a level near zero means nothing) use
        ``"absolute"``.
    repeat_limit, repeat_window
        Escalate a stream whose tests triggered ``repeat_limit`` times within ``repeat_window`` ticks;
        ``repeat_limit=0`` never escalates repeated triggers (off).
    silent_ticks
        Escalate a stream with no actuals for this many ticks in a row (>= 1); ticks that are the stream's
        rhythm (:attr:`mlma.policy.TickObservation.silent_for`: a shop's weekends) do not count.
    window_ticks
        The degradation test runs on the newest tick alone (quick on abrupt change) and on the stream's last
        ``window_ticks`` clean ticks (a sustained worsening gains evidence tick after tick); the bias test on
        the window. ``1``: newest tick only.
    probation_ticks
        Ticks stay this long in the window before they enter the reference (at least ``window_ticks``), so
        that a sudden change is tested against the reference before it is absorbed.
    backbone
        How a budget is spent: ``"schedule"`` (default) or ``"gain"`` (see ``budget``).
    challenge
        Which re-trainings must beat the champion before they serve: ``"triggers"`` (default; scheduled
        refreshes serve at once, as a schedule's fits do), ``"all"`` (all but the age backstop's) or
        ``"none"``.
    max_age
        Age backstop: a stream whose serving model is this many ticks old is re-trained and the new model
        served at once, whatever the tests say (``0``: off). Default 365, a year of daily ticks (the
        monitoring clock of sub-daily data); chosen by reasoning, not tuned: it costs at most
        ``1 / max_age`` = 0.0027 re-trainings per stream-tick, within the no-change target of 0.005. On
        coarser clocks it is longer in calendar time (a tick of daily data is a week). The first backstop of
        each stream is staggered over the second half of ``max_age`` (at age ``max_age - floor(slot *
        (max_age // 2))``, ``slot`` in [0, 1) from the stream's identity, :func:`stream_slots`), so that a
        fleet launched together is re-trained a few streams a tick; each stream keeps its phase afterwards.
    cusum_threshold
        An additional trigger (tests only add re-trainings): a one-sided CUSUM (:class:`mlma.monitor.cusum.CUSUM`)
        of each tested stream's tick loss relative to its reference level, ``S <- max(0, S + loss / level - 1 -
        delta)``, alarms when ``S`` exceeds this threshold, in reference mean losses (8: eight ticks' worth
        of the normal loss in excess over the relevance margin; a stream at 2x its reference alarms after
        9 ticks, one at 1.5x after 18, counted from 0). The level is the reference's when the statistic last
        stood at 0, frozen while the excess accumulates. Where the tests react to the significance of a
        rise, the CUSUM reacts to its size and duration. An alarm is a trigger like a test's rejection
        (checked as a challenger, explained as ``CUSUM: ...``, not subject to the fleet's FDR control); the
        statistic restarts after an alarm, with a new model and after a lost challenger. ``None`` or ``0``
        (default): off. Not the default: on the tuning seeds no threshold beat the tests alone
        (docs/results.md, "How the defaults were chosen").
    cusum_at_once
        Serve the CUSUM's re-trainings at once instead of checking them as challengers (default ``False``:
        checked; serving at once measured worse on the tuning seeds).
    skill_margin
        An additional trigger for a model that is poor *from day one*, which a test against its own reference
        never sees: the serving version's mean absolute error over its last ``reference_ticks`` clean ticks
        (its warm-up included) is compared with the seasonal-naive forecast's on the same steps (the actual a
        season earlier, kept by the policy: :class:`mlma.monitor.skill.SeasonalNaive`), one-sided, H0: model
        error <= ``1 + skill_margin`` times the naive's (:class:`mlma.monitor.skill.SkillTest`, a paired
        t-test of the tick means once a warm-up's worth is there). The absolute errors are the raw ones,
        whatever ``loss`` is, so that the naive's compare.
        The p-values form their own Benjamini-Hochberg family at ``alpha`` over the streams the tests test
        (not merged with the degradation and bias tests' family, whose per-stream Bonferroni factor would
        otherwise grow and weaken the default's triggers; the FDR of all triggers together stays below
        ``2 alpha``). A rejection is a trigger like a test's (checked as a challenger, explained as
        ``skill: ...``); the test starts afresh with a new model and is silent after a lost challenger until
        the next model (a fresh fit that did not beat the champion shows that the poor skill is the
        stream's, and another would not do better). Default ``None``: off. ``0.1`` (a model whose error is
        significantly more than 10 % above the naive's) won on the tuning seeds by 0.03-0.06 points, within
        noise, and made two real panels significantly worse when measured afterwards (docs/results.md, "Sixth
        pass"), so it is opt-in.
    page_hinkley
        An additional trigger (tests only add re-trainings): the Page-Hinkley test
        (:class:`mlma.monitor.page_hinkley.PageHinkley`) of each stream's scaled losses (errors over the
        stream's seasonal-naive scale, divided by the explained scale of known events) against their mean
        since the serving model started, with the relevance margin ``delta`` as a relative allowance: ``S <-
        max(0, S + k (x - (1 + delta) m - 0.005))`` for a tick of ``k`` losses of mean ``x``. A stream alarms
        when ``S`` exceeds this threshold (in scaled loss times losses: at 200 and 24 losses a tick, a doubled
        loss alarms after about two weeks); it is re-trained as a challenger, explained as ``Page-Hinkley:
        ...``. Every clean tick of the serving version counts, warm-up included; an alarm waits out the
        cool-down, like the growth trigger's, and the test restarts once an alarm is acted on and with a new
        model. A stream's own ``delta`` (``set_overrides``) is its allowance. ``None`` or ``0`` (default): off.
        200 is the lowest threshold whose no-change rate leaves room for the age backstop; it helped on the
        simulator and made real panels worse, aus-retail significantly (docs/results.md, "Eighth pass"), so
        it is opt-in.
    growth
        An additional trigger for a model fitted on part of a capped training window (a stream launched
        lately): once a re-training would use ``growth`` times the rows the serving model was fitted on
        (``TickObservation.train_rows``, the rows of the training window outside periods marked abnormal),
        the stream is re-trained as a challenger, explained as ``growth: ...``
        (:class:`mlma.monitor.growth.HistoryGrowth`; a lost challenger sets the bar at ``growth`` times its
        rows). A model fitted on a full window never fires,
        and with all history as the window the agent gives no rows, so it is silent there. Default ``2``:
        below the tests-only default on every tuning seed, its challengers mostly win; ``None`` turns it off.
        (It was opt-in while it also fired under all-history windows, where on short monthly series a
        schedule spent the same fits better; docs/results.md, "Seventh pass" and "Eighth pass".)
    common_shock
        When at least this share of the streams tested in a tick (and at least
        :data:`mlma.monitor.shock.MIN_COUNT`, 5) trigger together, a shock common to them is the likelier cause
        and a model re-trained on it mostly loses the next day: their triggers are held
        (:class:`mlma.monitor.shock.CommonShockHold`), still ``degraded`` on that tick. Each following tick a
        held stream is tested on its ticks since the shock alone (the degradation and bias tests on those
        window ticks, Bonferroni), and the streams whose p-values ``fdr`` rejects at
        :data:`mlma.monitor.shock.CONFIRM_LEVEL` (0.1) within the family of the held streams are re-trained,
        explained as ``common shock: ... confirmed by ...``; a stream with no such evidence after
        ``window_ticks`` of its ticks is released and the shock's tick is dropped from its window (it never
        enters the reference). Its own new triggers do not confirm it (their window holds the shock's tick). The
        tests' triggers only are held, not the CUSUM's or Page-Hinkley's. ``None`` or ``0`` (default): off.
        ``0.02`` cut 3-60 % of the re-trainings on the tuning seeds at about the same error, but its gap was
        above the default's on one seed of six (seed 4, -2.75 against -2.89), and a change of every stream at
        once is partly lost (docs/results.md, "Ninth pass"; docs/monitoring.md, step 7), so it is opt-in.
    """

    name = "mlma"
    checks_challenger = True

    def __init__(self, *, alpha: float = 0.01, delta: float = 0.05, fdr: str = "bh",
                 reference_ticks: int | None = None, warmup_ticks: int | None = None, cooldown_ticks: int = 2,
                 budget: float | None = None, refresh_ticks: int | None = 0, min_gain: float = 0.005,
                 explore_factor: int = 10, gain_prior=DEFAULT_GAIN_PRIOR, gain_prior_strength: float = 100.0,
                 bias_test: bool = True, loss: str = "absolute", repeat_limit: int = 3, repeat_window: int = 14,
                 silent_ticks: int = 3, window_ticks: int = 3, probation_ticks: int = 7,
                 backbone: str = "schedule", challenge: str = "triggers", max_age: int = 365,
                 cusum_threshold: float | None = None, cusum_at_once: bool = False,
                 page_hinkley: float | None = None,
                 skill_margin: float | None = None,
                 growth: float | None = 2.0, common_shock: float | None = None) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not (delta >= 0 and math.isfinite(delta)):
            raise ValueError(f"delta (the relevance margin) must be a finite number >= 0, got {delta!r}")
        if fdr not in ("bh", "by", "bonferroni", "none"):
            raise ValueError(f"fdr must be 'bh', 'by', 'bonferroni' or 'none', got {fdr!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {loss!r}")
        if budget is not None and not (isinstance(budget, numbers.Real) and budget > 0
                                       and (budget < 1 or float(budget).is_integer())):
            raise ValueError(f"budget must be a whole number >= 1 (re-trainings per tick), a share of the fleet "
                             f"in (0, 1), or None, got {budget!r}")
        if backbone not in ("schedule", "gain"):
            raise ValueError(f"backbone must be 'schedule' or 'gain', got {backbone!r}")
        if challenge not in ("triggers", "all", "none"):
            raise ValueError(f"challenge must be 'triggers', 'all' or 'none', got {challenge!r}")
        for name, value, low in (("window_ticks", window_ticks, 1), ("probation_ticks", probation_ticks, 0),
                                 ("repeat_window", repeat_window, 1), ("repeat_limit", repeat_limit, 0),
                                 ("explore_factor", explore_factor, 1)):
            _check_count(name, value, low, MAX_TICKS)
        # A stream is silent after a tick without actuals: 0 would escalate every stream that reported.
        _check_count("silent_ticks", silent_ticks, 1, MAX_TICKS,
                     "ticks without actuals before a stream is escalated as silent")
        for name, value in (("reference_ticks", reference_ticks), ("warmup_ticks", warmup_ticks)):
            if value is not None:
                _check_count(name, value, 1, MAX_REFERENCE_TICKS)
            if value is not None and value < MIN_REFERENCE_TICKS:
                raise ValueError(f"{name} must be at least {MIN_REFERENCE_TICKS} (the degradation test needs four "
                                 f"reference blocks; fewer would silently delay the first test), got {value!r}")
        if reference_ticks is not None and warmup_ticks is not None and warmup_ticks > reference_ticks:
            raise ValueError(f"warmup_ticks ({warmup_ticks}) cannot exceed reference_ticks ({reference_ticks})")
        if refresh_ticks is not None:
            _check_count("refresh_ticks", refresh_ticks, 0, MAX_TICKS, "0: no refresh")
        _check_count("max_age", max_age, 0, MAX_TICKS, "the age backstop, in ticks, 0: off")
        if (isinstance(min_gain, bool) or not isinstance(min_gain, numbers.Real) or not math.isfinite(min_gain)
                or isinstance(gain_prior_strength, bool) or not isinstance(gain_prior_strength, numbers.Real)
                or not 0 < gain_prior_strength < math.inf):
            raise ValueError(f"min_gain must be a finite number and gain_prior_strength a finite number > 0, got "
                             f"min_gain={min_gain!r}, gain_prior_strength={gain_prior_strength!r}")
        _check_threshold("cusum_threshold", cusum_threshold, "the CUSUM trigger's threshold, in reference mean losses",
                         "CUSUM")
        if skill_margin is not None and (isinstance(skill_margin, bool) or not isinstance(skill_margin, numbers.Real)
                                         or not skill_margin >= 0 or not math.isfinite(skill_margin)):
            raise ValueError(f"skill_margin (the skill trigger's accepted excess of the mean scaled loss over the "
                             f"seasonal naive's 1) must be a finite number >= 0, or None for no skill trigger, "
                             f"got {skill_margin!r}")
        PARAMETERS["cooldown_ticks"].check(cooldown_ticks, "the policy")  # kept in 32-bit counters: no wrap-round
        self.alpha, self.delta, self.fdr, self.loss = alpha, delta, fdr, loss
        self.reference_ticks, self.warmup_ticks = reference_ticks, warmup_ticks
        self.cooldown_ticks = cooldown_ticks
        self.budget = None if budget is None else (int(budget) if budget >= 1 else float(budget))
        self.refresh_ticks, self.min_gain, self.explore_factor = refresh_ticks, min_gain, int(explore_factor)
        self.gain_prior, self.gain_prior_strength, self.bias_test = gain_prior, gain_prior_strength, bias_test
        self.repeat_limit, self.repeat_window, self.silent_ticks = repeat_limit, repeat_window, silent_ticks
        self.window_ticks = window_ticks
        self.backbone, self.challenge = backbone, challenge
        self.max_age = int(max_age)
        self.cusum_threshold = None if not cusum_threshold else float(cusum_threshold)
        if not isinstance(cusum_at_once, (bool, np.bool_)):
            raise ValueError(f"cusum_at_once must be True or False, got {cusum_at_once!r}")
        self.cusum_at_once = bool(cusum_at_once)
        # The allowance is the relevance margin: a rise under delta is not worth a re-training, so it must not
        # accumulate either (a stream's own delta override replaces it at update time).
        self.cusum = CUSUM(self.cusum_threshold or 1.0, drift=delta)
        self.skill_margin = None if skill_margin is None else float(skill_margin)
        _check_threshold("page_hinkley", page_hinkley,
                         "the Page-Hinkley trigger's threshold, in scaled loss times losses", "Page-Hinkley")
        self.page_hinkley = None if not page_hinkley else float(page_hinkley)
        # The relevance margin is its relative allowance: a rise under delta is not worth a re-training, so
        # it must not add up to one either.
        self.ph = PageHinkley(self.page_hinkley or 1.0, margin=delta)
        if not isinstance(growth, bool) and isinstance(growth, numbers.Real) and growth == 0:
            growth = None  # 0 is off, as for the other triggers and in mlma.toml
        if growth is not None and (isinstance(growth, bool) or not isinstance(growth, numbers.Real)
                                   or not growth > 1 or not math.isfinite(growth)):
            raise ValueError(f"growth (re-train a model fitted on a short history once the history a re-training "
                             f"would use is this many times larger) must be a finite number > 1, or 0 / None for no "
                             f"growth trigger, got {growth!r}")
        self.growth = None if growth is None else float(growth)
        self.history_growth = HistoryGrowth(self.growth or 2.0)
        if not isinstance(common_shock, bool) and isinstance(common_shock, numbers.Real) and common_shock == 0:
            common_shock = None  # 0 is off, as for the triggers and in mlma.toml
        # A held trigger waits as long as its tick is in the stream's window of recent ticks.
        self.shock = CommonShockHold(1.0 if common_shock is None else common_shock,
                                     hold_ticks=max(int(window_ticks), 1))  # validates the share
        self.common_shock = None if common_shock is None else float(common_shock)
        # Sized in reset (its window is the reference's capacity, its minimum the warm-up).
        self.skill = SkillTest(self.skill_margin or 0.0)
        self._period = 0
        # The degradation test's block means of the newest tick, kept for the CUSUM (see _cusum_excess).
        self._newest_means = None
        # Each stream's place in [0, 1) from its identity (identify_streams); empty until the agent names them.
        self._slots = np.zeros(0)
        self.probation_ticks = max(probation_ticks, window_ticks)
        self.gain = GainModel(gain_prior, gain_prior_strength)

    def get_params(self) -> dict:
        """The constructor's parameters and their values (sklearn style)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    # -- state ----------------------------------------------------------------------------------------------
    def reset(self, n_streams: int, season_length: int, steps_per_tick: int) -> None:
        super().reset(n_streams, season_length, steps_per_tick)
        steps = max(steps_per_tick, 1)
        # Two weekly cycles of daily ticks give the test far more power (degrees of freedom) than one.
        capacity = self.reference_ticks or max(math.ceil(max(48, 2 * season_length) / steps),
                                               14 if steps >= 24 else 0, MIN_REFERENCE_TICKS)
        warmup = self.warmup_ticks or max(math.ceil(season_length / steps), MIN_REFERENCE_TICKS)
        self.capacity = int(capacity)
        self.warmup = int(min(warmup, capacity))
        self.steps = steps
        self.refresh = int(self.refresh_ticks if self.refresh_ticks is not None else (28 if steps >= 24 else 4))
        n = n_streams
        self.ref = np.full((n, self.capacity, steps), np.nan, dtype=np.float32)
        # Per-slot sum and count of the finite reference losses, kept as batches enter the ring: the test of
        # a fully observed batch needs only the block means, so the ring is not re-read every tick.
        self.ref_sum = np.zeros((n, self.capacity))
        self.ref_count = np.zeros((n, self.capacity))
        # Per-slot mean signed error (NaN when unknown), for the bias test.
        self.ref_bias = np.full((n, self.capacity), np.nan)
        self.ref_len = np.zeros(n, dtype=np.int16)
        self.ref_next = np.zeros(n, dtype=np.int16)
        self.ref_version = np.zeros(n, dtype=np.int32)
        self.ref_first_tick = np.full(n, -1, dtype=np.int32)
        self.cooldown_until = np.full(n, -1, dtype=np.int32)
        # The last repeat_limit trigger ticks of each stream (-inf-like when unused), oldest first.
        self.trigger_ticks = np.full((n, max(self.repeat_limit, 1)), _NO_TICK, dtype=np.int32)
        # Per-stream overrides (NaN / -1: the policy's own value), set by Agent controls.
        self.delta_override = np.full(n, np.nan)
        self.cooldown_override = np.full(n, -1, dtype=np.int32)
        self.silent_for = np.zeros(n, dtype=np.int32)
        self.flagged = np.zeros(n, dtype=bool)
        # What each stream normally reports, learnt from healthy ticks (EWMA), for the data-quality checks.
        self.typical_count = np.full(n, np.nan)
        self.typical_level = np.full(n, np.nan)
        self.typical_spread = np.full(n, np.nan)
        self.abnormal = np.zeros(n, dtype=bool)
        w = self.probation_ticks
        self.window = np.full((n, w, steps), np.nan, dtype=np.float32)
        self.window_len = np.zeros(n, dtype=np.int16)
        self.window_sum = np.zeros((n, w))
        self.window_count = np.zeros((n, w))
        self.window_bias = np.full((n, w), np.nan)
        self.gain.reset(n)
        self.cusum.reset(n)
        self.ph.reset(n)
        self.history_growth.reset(n)
        self.shock.reset(n)
        # Each stream's full-tick reference level when its CUSUM run began (NaN: not started), see _cusum_excess.
        self.cusum_baseline = np.full(n, np.nan)
        # The skill test reads as many ticks as the reference holds, once the warm-up's worth is there.
        self.skill = SkillTest(self.skill_margin or 0.0, window=max(self.capacity, 2),
                               min_ticks=min(max(self.warmup, 2), max(self.capacity, 2)))
        self.skill.reset(n)
        self.naive = SeasonalNaive(max(int(season_length), 1))
        self.naive.reset(n)

    def on_new_model(self, streams: np.ndarray, tick: int) -> None:
        """A new version serves: its reference starts empty and fills with its own first losses."""
        streams = np.asarray(streams, dtype=np.int64)
        self._clear_reference(streams, tick)
        # The skill test judges a serving version on its own ticks, whatever happens to the reference: only a
        # new model starts it afresh (and ends a silence after a lost challenger); a person's reset or rebase
        # of the reference does not.
        self.skill.restart(streams)
        self.ph.restart(streams)
        self.history_growth.served(streams)
        self.ref_version[streams] += 1
        self.cooldown_until[streams] = np.maximum(self.cooldown_until[streams], tick + self._cooldown(streams))

    def on_challenger_lost(self, streams: np.ndarray, tick: int) -> None:
        """The re-training did not help: the stream's present becomes its normal. Its reference starts afresh
        from the next ticks, and it cools down. (Older ticks of the window may predate the change that
        triggered: kept, they made the same evidence trigger again. The tick the challenger was judged on is
        left out too: the challenger lost *because* the champion did well on it, so it would bias the new
        reference low.)"""
        streams = np.asarray(streams, dtype=np.int64)
        self.reset_reference(streams, tick)
        self.cooldown_until[streams] = tick + np.maximum(self._cooldown(streams), 1)
        # A fresh fit did not beat the champion: whatever skill the model lacks, re-training does not supply,
        # so the skill test waits for the next model (the degradation and bias tests go on).
        self.skill.silence(streams)
        self.history_growth.lost(streams)

    def on_challenger_dropped(self, streams: np.ndarray, tick: int) -> None:
        """A dropped challenger was fitted but never judged: the growth trigger stops waiting for it."""
        self.history_growth.dropped(streams)

    @property
    def needs_train_rows(self) -> bool:
        return self.growth is not None

    def on_models_fitted(self, streams: np.ndarray, tick: int, train_rows: np.ndarray) -> None:
        if self.growth is not None:
            self.history_growth.fitted(streams, train_rows)

    def on_challenger_judged(self, streams, tick, challenger_loss, champion_loss) -> None:
        from mlma.monitor.gain import realised_gain

        self.gain.learn(np.asarray(streams, dtype=np.int64), realised_gain(challenger_loss, champion_loss))

    def challenger_loss(self, errors: np.ndarray, forecasts: np.ndarray | None = None,
                        stream: int | None = None, explained: np.ndarray | None = None) -> np.ndarray:
        """The policy's loss of signed ``errors``; the relative loss divides them by the level of
        ``forecasts``, which the agent gives as the *serving* model's forecasts of the same timestamps for
        both the challenger and the champion: a common denominator, so that neither gains by forecasting
        high. ``stream`` (its index) sets the floor from the stream's usual level. ``explained``, the serving
        model's explained scale (:attr:`~mlma.policy.TickObservation.explained`), divides the absolute and
        squared losses' errors, the same for both sides.

        >>> MLMAPolicy(loss="relative").challenger_loss(np.array([1.0, -3.0]), forecasts=np.array([10.0, 30.0]))
        array([0.05, 0.15])
        """
        if self.loss != "relative" and explained is not None:
            errors = errors / explained
        if self.loss == "absolute":
            return np.abs(errors)
        if self.loss == "squared":
            return np.square(errors)
        if forecasts is None:
            raise ValueError("loss='relative' judges challengers relative to the serving model's forecasts; "
                             "pass forecasts=")
        floor = 0.0 if stream is None else self._floor(np.array([stream]))
        level = forecast_level(np.asarray(forecasts, dtype=np.float64).reshape(1, -1), floor)[0]
        return np.abs(errors) / level

    def _floor(self, streams: np.ndarray, actuals: np.ndarray | None = None) -> np.ndarray:
        """The relative loss's floor of ``streams``: ``RELATIVE_FLOOR`` times their usual level; where that is
        not known yet, times the level of the tick's own ``actuals`` (else 0). Without that fallback a stream
        forecast at zero from its first tick would have no loss, so no clean tick to learn its level from."""
        usual = np.abs(self.typical_level[streams])
        if actuals is not None:
            unknown = ~np.isfinite(usual)
            if unknown.any():
                usual = usual.copy()
                usual[unknown] = _mean_error(np.abs(actuals[unknown]), int(unknown.sum()))
        return RELATIVE_FLOOR * np.nan_to_num(usual, nan=0.0)

    def _monitored_losses(self, obs: TickObservation) -> tuple[np.ndarray, np.ndarray | None]:
        """The tick's losses in the policy's loss, and the signed errors in the same units (None unknown).

        The absolute and squared losses divide the errors by the observation's explained scale when it has
        one (the level change the model attributes to known events; exactly 1 where none runs); the relative
        loss's level already moves with the forecast, so it ignores the scale."""
        if self.loss != "relative" and obs.explained is not None:
            losses = obs.losses / obs.explained
            errors = None if obs.errors is None else obs.errors / obs.explained
            return (losses if self.loss == "absolute" else losses ** 2), errors
        if self.loss == "absolute":
            return obs.losses, obs.errors
        if self.loss == "squared":
            return obs.losses ** 2, obs.errors
        forecasts = obs.forecasts
        if forecasts is None and obs.errors is not None:
            forecasts = obs.actuals - obs.errors
        if forecasts is None:
            raise ValueError("loss='relative' needs the served forecasts (or the signed errors) in the "
                             "observation; this caller gives neither")
        # The floor comes from the usual level learnt before this tick, so the tick cannot lower its own.
        level = forecast_level(forecasts, self._floor(np.arange(obs.n_streams), obs.actuals))[:, None]
        errors = None if obs.errors is None else obs.errors / level
        return obs.losses / level, errors

    def _cooldown(self, streams: np.ndarray) -> np.ndarray:
        own = self.cooldown_override[streams]
        return np.where(own >= 0, own, self.cooldown_ticks)

    def set_overrides(self, *, delta: np.ndarray | None = None, cooldown_ticks: np.ndarray | None = None) -> None:
        """Per-stream monitoring parameters (NaN or negative: the policy's own), e.g. from ``mlma set-params``."""
        n = len(self.ref_len)
        self.delta_override = np.full(n, np.nan) if delta is None else np.asarray(delta, dtype=np.float64)
        self.cooldown_override = (np.full(n, -1, dtype=np.int32) if cooldown_ticks is None
                                  else np.asarray(cooldown_ticks, dtype=np.int32))

    def reset_reference(self, streams: np.ndarray, tick: int, *, rebase: bool = False,
                        recent_ticks: int | None = None) -> None:
        """Start the streams' references afresh (reset), or from their recent losses (re-base).

        Reset: the next clean batches of the serving model build a new reference (the stream warms up
        again). Re-base: the ticks in the probation window (its newest ``recent_ticks`` only, if given)
        become the reference at once, accepting the stream's recent behaviour as its new normal; a
        reference shorter than the warm-up is filled by the next ticks.
        """
        streams = np.asarray(streams, dtype=np.int64)
        if not len(streams):
            return
        recent = {}
        for s in streams:
            m = int(self.window_len[s]) if rebase else 0
            if recent_ticks is not None:
                m = min(m, recent_ticks)
            if m > 0:
                recent[int(s)] = (self.window[s, -m:].copy(), self.window_sum[s, -m:].copy(),
                                  self.window_count[s, -m:].copy(), self.window_bias[s, -m:].copy())
        self._clear_reference(streams, tick)
        for s, (batches, sums, counts, bias) in recent.items():
            for b, total, count, mean_error in zip(batches, sums, counts, bias):
                self._append_rows(np.array([s]), b[None, :], np.array([total]), np.array([count]),
                                  np.array([mean_error]))
            self.ref_first_tick[s] = tick + 1 - len(batches)

    def _clear_reference(self, streams: np.ndarray, tick: int) -> None:
        """Empty the streams' reference ring and probation window; the reference restarts after ``tick``."""
        self.ref[streams] = np.nan
        self.ref_sum[streams] = 0.0
        self.ref_count[streams] = 0.0
        self.ref_bias[streams] = np.nan
        self.ref_len[streams] = 0
        self.ref_next[streams] = 0
        self.ref_first_tick[streams] = tick + 1
        self.window[streams] = np.nan
        self.window_len[streams] = 0
        self.window_sum[streams] = 0.0
        self.window_count[streams] = 0.0
        self.window_bias[streams] = np.nan
        # The CUSUM measured the old reference's excess: a new model (or, after a lost challenger, a new
        # normal) starts it afresh, else the evidence that triggered would trigger again at once. A held
        # trigger was evidence against the old reference too.
        self.cusum.restart(streams)
        self.shock.release(streams)

    def reference_mean(self) -> np.ndarray:
        """Each stream's mean reference loss (NaN while it has none)."""
        count = self.ref_count.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, self.ref_sum.sum(axis=1) / np.maximum(count, 1), np.nan)

    def flagged_streams(self) -> np.ndarray:
        """Streams whose recent batches the data-quality check flagged (their escalation stays open)."""
        return self.flagged.copy()

    #: The parts that keep per-stream state of their own: (attribute, class with a ``STATE``, whether a state
    #: saved before the part existed may lack its arrays). A part added later starts empty on such a restart
    #: (the evidence of its last few ticks is lost, the serving models' rows are taken to be those before the
    #: next tick, no trigger is held) rather than refusing it.
    _PARTS = (("gain", GainModel, False), ("cusum", CUSUM, True), ("ph", PageHinkley, True),
              ("skill", SkillTest, True), ("naive", SeasonalNaive, True), ("history_growth", HistoryGrowth, True),
              ("shock", CommonShockHold, True))
    #: Per-stream arrays that make up the policy's state (saved and restored by live operation): its own, then
    #: its parts'.
    STATE = (("ref", "ref_sum", "ref_count", "ref_bias", "ref_len", "ref_next", "ref_version", "ref_first_tick",
              "cooldown_until", "trigger_ticks", "silent_for", "flagged", "typical_count", "typical_level",
              "typical_spread", "abnormal", "window", "window_len", "window_sum", "window_count", "window_bias",
              "cusum_baseline")
             + tuple(name for _, part, _ in _PARTS for name in part.STATE))

    def _owner(self, name: str):
        for attribute, part, _ in self._PARTS:
            if name in part.STATE:
                return getattr(self, attribute)
        return self

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self._owner(name), name) for name in self.STATE}

    @classmethod
    def optional_state(cls) -> frozenset[str]:
        """The arrays of :attr:`STATE` a saved state may lack (those of parts added later, and the CUSUM's level):
        :meth:`load_state_arrays` starts them fresh. Any other missing array means the state was saved by
        another policy or an incompatible version."""
        return frozenset(name for _, part, optional in cls._PARTS if optional for name in part.STATE) | {
            "cusum_baseline"}

    def load_state_arrays(self, arrays) -> None:
        parts = [name for _, part, _ in self._PARTS for name in part.STATE]
        owners = {name: self._owner(name) for name in parts}
        # Arrays of parts added later (and the CUSUM's level) default to their fresh values (optional_state).
        fresh = {name: getattr(getattr(self, attribute), name)
                 for attribute, part, optional in self._PARTS if optional for name in part.STATE}
        arrays = fresh | {"cusum_baseline": self.cusum_baseline} | dict(arrays)
        for name in parts:
            setattr(self, name, getattr(owners[name], name))
        super().load_state_arrays(arrays)
        for name in parts:
            setattr(owners[name], name, getattr(self, name))
            delattr(self, name)
        self.gain.state_changed()

    def reference_losses(self, s: int) -> np.ndarray:
        """Stream ``s``'s reference losses in time order (oldest first), NaN-free."""
        order = (self.ref_next[s] - self.ref_len[s] + np.arange(self.ref_len[s])) % self.capacity
        values = self.ref[s, order].ravel()
        return values[np.isfinite(values)]

    def schedule_period(self, n_models: int) -> int:
        """Ticks between a stream's scheduled refreshes that spend the budget: ``1 / budget`` for a share of
        the fleet, ``n_models / budget`` for a number of re-trainings per tick (at least 1).

        >>> MLMAPolicy(budget=0.05).schedule_period(200), MLMAPolicy(budget=20).schedule_period(200)
        (20, 10)
        """
        share = self.budget if self.budget < 1 else self.budget / max(n_models, 1)
        self._period = max(1, int(round(1.0 / share)))
        return self._period

    def refresh_interval(self) -> int:
        """Ticks between refreshes now: ``refresh_ticks`` while the fleet's learned gain of a refresh (a
        model at refresh age, no test evidence) is at least ``min_gain``; ``explore_factor`` times more
        otherwise; 0 when the refresh is off."""
        if self.refresh <= 0:
            return 0
        at_refresh_age = np.array([[1.0, 1.0, 0.0, 0.0]])
        learned = float(self.gain.predict(at_refresh_age)[0])
        return self.refresh if learned >= self.min_gain else self.refresh * self.explore_factor

    # -- the decision ---------------------------------------------------------------------------------------
    def decide(self, obs: TickObservation) -> Decision:
        n, k = obs.n_streams, obs.tick
        losses, signed = self._monitored_losses(obs)
        current = _fit_width(losses, self.steps)
        errors = None if signed is None or not self.bias_test else _fit_width(signed, self.steps)
        decision = Decision.nothing(n, Verdict.OK)
        decision.p_value = np.full(n, np.nan)
        decision.effect = np.full(n, np.nan)
        # In the reference's units, so that loss and reference compare (dashboards, loss ratio).
        decision.loss = _mean_error(current, n)
        escalations: list[Escalation] = []

        has_batch = np.isfinite(current).any(axis=1) & obs.has_model
        # Only a stream that has reported before (it has a model) can go silent; one not launched yet is not.
        before = self.silent_for
        if obs.silent_for is None:  # counted here: ticks in a row without actuals of a stream with a model
            self.silent_for = np.where(obs.observed > 0, 0, np.where(obs.has_model, self.silent_for + 1, 0))
            rhythm = ""
        else:
            # The agent's count (mlma.silence): launched streams only, the stream's rhythm (a shop's weekends) left
            # out, so it may stay where it is for a tick; it goes on through a re-fit that leaves a stream without
            # a model for a moment, and where this policy's state started afresh (a change of policy).
            self.silent_for = np.asarray(obs.silent_for).astype(self.silent_for.dtype)
            rhythm = " (not counting the ticks it is usually silent at)" if obs.silence_rhythm else ""
        # Escalated on the tick its count reaches the limit, or passes it beyond what this policy had seen.
        reached = obs.has_model & (self.silent_for >= self.silent_ticks) & (before < self.silent_ticks)
        for s in np.flatnonzero(reached):
            escalations.append(Escalation(int(s), k, "silent", 1,
                                          f"no actuals for {int(self.silent_for[s])} ticks in a row{rhythm}"))

        quality = check_batch(obs.actuals, self.typical_count, self.typical_level, self.typical_spread)
        suspect = quality.any & has_batch
        for s in np.flatnonzero(suspect & ~self.flagged):
            escalations.append(Escalation(int(s), k, "data-quality", 2,
                                          f"actuals look broken ({quality.describe(s)}); not used for "
                                          f"re-training or the reference"))
        self.flagged = suspect
        abnormal = self.abnormal if obs.abnormal is None else (self.abnormal | obs.abnormal)
        clean = has_batch & ~suspect & ~abnormal
        self._learn_typical(obs.actuals, clean)
        bias = _mean_error(errors, n)

        # Warm-up: a new version's first clean batches become its reference.
        warming = clean & (self.ref_len < self.warmup)
        self._append(warming, current, bias)
        monitored = clean & ~warming
        cooling = monitored & (k <= self.cooldown_until)
        self._push_window(monitored, current, bias)
        if self.common_shock is not None:
            self.shock.seen(monitored)
        testable = monitored & ~cooling
        reject = np.zeros(n, dtype=bool)
        excess = np.zeros(n)
        p_degradation = np.full(n, np.nan)
        p_bias = np.full(n, np.nan)
        idx = np.flatnonzero(testable)
        if len(idx):
            p_deg, effect, excess_idx = self._test(idx, current)
            p_degradation[idx] = p_deg
            decision.effect[idx] = effect
            excess[idx] = excess_idx
            p = p_deg
            if errors is not None:
                p_bias[idx] = self._bias_test(idx)
                has_bias = np.isfinite(p_bias[idx])
                p = np.where(has_bias, np.minimum(1.0, 2 * np.fmin(p_deg, p_bias[idx])), p_deg)
            decision.p_value[idx] = p
            reject[idx], _ = fdr_control(p, alpha=self.alpha, method=self.fdr)
        # Many streams triggering in one tick is a shock common to them (a holiday, a storm over a city), and a
        # model re-trained on it mostly loses the next day: such a tick's triggers wait for the next ticks'
        # tests to confirm them (mlma.monitor.shock). They are still DEGRADED this tick.
        found = reject
        held = np.zeros(n, dtype=bool)
        if self.common_shock is not None:
            # The held streams tested this tick are judged on their ticks since the shock alone.
            after = np.full(n, np.nan)
            since = self.shock.ticks_since()
            judged = np.flatnonzero(testable & (since > 0))
            if len(judged):
                after[judged] = self._after_shock_p(judged, np.minimum(since[judged], self.window_ticks),
                                                    errors is not None)
            reject = self.shock.act(reject, len(idx), k, after, method=self.fdr)
            held = self.shock.held
            released = np.flatnonzero(self.shock.released)
            if len(released):
                # The shock did not last: its tick must not enter the reference, where it would hide a change.
                self._drop_window_tick(released, self.shock.shock_seen[released])
        # The CUSUM trigger: the excess of each tested stream's tick over its reference accumulates.
        alarm = np.zeros(n, dtype=bool)
        cusum_level = np.zeros(n)
        cusum_run = np.zeros(n, dtype=np.int32)
        cusum_drift = np.full(n, self.delta)
        if self.cusum_threshold and len(idx):
            cusum_drift[idx] = self._deltas(idx)
            alarm[idx], cusum_level[idx], cusum_run[idx] = self.cusum.update(
                idx, self._cusum_excess(idx, current, decision.loss[idx]), cusum_drift[idx])
        # The skill trigger: every clean tick of the serving version enters its ring (warm-up included: a
        # model mediocre from day one is what it is for); streams tested by the tests are tested, with their
        # own Benjamini-Hochberg family at alpha (see the class docstring).
        skill_reject = np.zeros(n, dtype=bool)
        skill_p = np.full(n, np.nan)
        skill_mean = np.full(n, np.nan)
        skill_n = np.zeros(n, dtype=np.int64)
        if self.skill_margin is not None:
            # The naive's errors on this tick; broken actuals are not kept as the next season's forecast.
            naive = _fit_width(self.naive.errors(k, np.where(suspect[:, None], np.nan, obs.actuals)), self.steps)
            fed = np.flatnonzero(clean)
            if len(fed):
                model = _fit_width(np.asarray(obs.losses, dtype=np.float64), self.steps)[fed]
                both = np.isfinite(model) & np.isfinite(naive[fed])
                p_s, mean_s, n_s = self.skill.update(fed, _mean_error(np.where(both, model, np.nan), len(fed)),
                                                     _mean_error(np.where(both, naive[fed], np.nan), len(fed)))
                skill_p[fed], skill_mean[fed], skill_n[fed] = p_s, mean_s, n_s
            if len(idx):
                tested = skill_p[idx]
                has = np.isfinite(tested)
                if has.any():
                    skill_reject[idx[has]], _ = fdr_control(tested[has], alpha=self.alpha, method=self.fdr)
        # The growth trigger: a model fitted on a short history, once a re-training would use `growth` times
        # as many rows (mlma.monitor.growth). Like the backstop it waits only for clean data, and a cool-down.
        grown = np.zeros(n, dtype=bool)
        if self.growth is not None and obs.train_rows is not None:
            # A tick marked abnormal added no rows a fit learns from (train_rows leaves them out).
            added = np.where(abnormal, 0, obs.observed)
            grown = (self.history_growth.due(obs.train_rows, added, obs.has_model)
                     & has_batch & ~suspect & ~abnormal & (k > self.cooldown_until))
        # The Page-Hinkley trigger: every clean tick of the serving version feeds it, warm-up included, on the
        # scaled losses divided by the explained scale of known events (whatever `loss` is: the scaled losses
        # are absolute errors). Like the growth trigger, an alarm waits out the cool-down (the statistic
        # stands until then) and is restarted once acted on, below.
        ph_alarm = np.zeros(n, dtype=bool)
        ph_level, ph_mean, ph_run = np.zeros(n), np.full(n, np.nan), np.zeros(n, dtype=np.int32)
        ph_margin = np.full(n, self.delta)
        if self.page_hinkley is not None:
            fed = np.flatnonzero(clean)
            if len(fed):
                scaled = obs.scaled_losses if obs.explained is None else obs.scaled_losses / obs.explained
                scaled = _fit_width(np.asarray(scaled, dtype=np.float64), self.steps)[fed]
                ph_margin[fed] = self._deltas(fed)
                ph_alarm[fed], ph_level[fed], ph_mean[fed], ph_run[fed] = self.ph.update(
                    fed, _row_mean(scaled), np.isfinite(scaled).sum(axis=1), margin=ph_margin[fed])
            ph_alarm &= k > self.cooldown_until
        trigger = reject | alarm | ph_alarm | skill_reject | grown

        decision.verdict[~obs.has_model] = Verdict.COLD
        decision.verdict[obs.has_model & ~has_batch] = Verdict.NO_DATA
        decision.verdict[warming | (suspect & (self.ref_len < self.warmup))] = Verdict.WARMING_UP
        decision.verdict[cooling] = Verdict.COOLING_DOWN
        decision.verdict[trigger | found] = Verdict.DEGRADED
        decision.verdict[has_batch & abnormal & ~suspect] = Verdict.ABNORMAL

        # The expected gain of re-training each stream now.
        age = np.asarray(obs.ticks_since_fit, dtype=np.float64)
        interval = self.refresh_interval()
        features = decision_features(age / self.refresh if self.refresh > 0 else np.zeros(n),
                                     p_degradation, p_bias)
        expected = self.gain.predict(features)
        # A stream the agent will not re-train this tick (its last re-training is still being judged, or a
        # person put a model in service) is not chosen: choosing it would spend a budget's slot, count its
        # evidence as a trigger acted on (repeated triggers), restart the Page-Hinkley statistic and replace
        # the features the gain model learns from. Its verdict and the reason still say what was found.
        free = ~obs.busy if obs.busy is not None else np.ones(n, dtype=bool)
        eligible = has_batch & ~suspect & ~abnormal & ~warming & ~cooling & free
        if interval > 0:
            # The first version of every stream starts at the same tick: stagger its first refresh over one
            # interval so that the fleet is not re-trained at once.
            first = self.ref_version <= 1
            offset = np.where(first, self._stagger(n, interval), 0)
            due = eligible & (age >= interval - offset)
        else:
            due = np.zeros(n, dtype=bool)
        scheduled = np.zeros(n, dtype=bool)
        if self.budget is None:
            chosen = trigger | due
            scheduled = due & ~trigger
            self._period = interval
        elif self.backbone == "schedule":
            period = self.schedule_period(int(obs.has_model.sum()))
            on_phase = self._stagger(n, period) == k % period
            # Each stream is refreshed every `period` ticks at its own phase, served at once as a schedule
            # serves its fits; a model re-trained earlier (a trigger) is next due `period` ticks after it,
            # so a trigger moves the stream's slot instead of adding to the count.
            first = self.ref_version <= 1
            due = (has_batch & ~suspect & ~abnormal & obs.has_model
                   & np.where(first, on_phase | (age > period), age >= period))
            # Tests only add re-trainings on strong evidence, checked as challengers.
            chosen = due | grown | ph_alarm | (eligible & ((reject & (expected >= self.min_gain)) | alarm
                                                           | skill_reject))
            scheduled = due
        else:
            size = int(self.budget) if self.budget >= 1 else max(1, round(self.budget * int(obs.has_model.sum())))
            # Only where a re-training is expected to pay at least min_gain, or a test found degradation.
            # Ties (evidence is capped) go to the larger excess loss, then to the older model.
            # A held stream's evidence is the shock's until the ticks after it confirm it.
            chosen = _highest(eligible & ~held & ((expected >= self.min_gain) | trigger), expected, size,
                              tiebreak=(np.nan_to_num(excess), age))

        # The age backstop: however the tests and challengers went, no model serves longer than max_age ticks.
        # It does not wait for warm-up or cool-down (a stream whose challengers keep losing keeps restarting
        # both), only for clean data to train on.
        backstop = np.zeros(n, dtype=bool)
        if self.max_age > 0:
            offset = np.where(self.ref_version <= 1, self._stagger(n, max(1, self.max_age // 2)), 0)
            backstop = (has_batch & ~suspect & ~abnormal & obs.has_model & ~scheduled & free
                        & (age >= self.max_age - offset))
            chosen = chosen | backstop
            scheduled = scheduled | backstop
        chosen &= free
        scheduled &= free

        picked = np.flatnonzero(chosen)
        # Streams that would have been chosen but for a verdict in progress: their reason says so.
        deferred = np.flatnonzero((trigger | found) & ~free & ~chosen)
        # A Page-Hinkley alarm acted on starts its stream afresh (one not chosen, e.g. outside a gain-ranked
        # budget, stands for the next tick).
        self.ph.restart(np.flatnonzero(chosen & ph_alarm))
        fit_rows = self.history_growth.fit_rows
        triggered = np.flatnonzero(chosen & trigger)
        if len(triggered):
            earlier = self.trigger_ticks[triggered]
            # The ring holds repeat_limit ticks, so a count that reaches the limit is exact, and a larger one
            # (no new escalation) stays larger.
            count = (earlier > k - self.repeat_window).sum(axis=1) + 1
            self.trigger_ticks[triggered, :-1] = earlier[:, 1:]
            self.trigger_ticks[triggered, -1] = k
            for s, c in zip(triggered, count):
                if c == self.repeat_limit:
                    escalations.append(Escalation(int(s), k, "repeated-trigger", 2,
                                                  f"{c} triggers within {self.repeat_window} ticks"))
        decision.retrain = chosen
        # Scheduled refreshes serve at once, as a schedule's fits do; the other re-trainings are checked as
        # challengers unless the policy is told otherwise. The age backstop always serves at once: checked,
        # it could lose like the challengers before it and leave the model as old as it was.
        decision.serve_at_once = {"triggers": scheduled, "none": chosen, "all": backstop}[self.challenge]
        at_once_alarm = chosen & alarm & ~scheduled & self.cusum_at_once
        decision.serve_at_once = decision.serve_at_once | at_once_alarm
        mean_ratio = 1.0 + cusum_drift + cusum_level / np.maximum(cusum_run, 1)
        explained = np.concatenate([picked, deferred])
        decision.reason[explained] = [self._explain(s, reject[s] and not scheduled[s], age[s], decision,
                                                    p_degradation[s], p_bias[s], expected[s], scheduled[s],
                                                    backstop[s],
                                                    (cusum_level[s], cusum_run[s], mean_ratio[s], at_once_alarm[s])
                                                    if alarm[s] and not scheduled[s] else None,
                                                    (ph_level[s], ph_run[s], ph_mean[s], ph_margin[s])
                                                    if ph_alarm[s] and not scheduled[s] else None,
                                                    (skill_mean[s], skill_n[s], skill_p[s])
                                                    if skill_reject[s] and not scheduled[s] else None,
                                                    (fit_rows[s], obs.train_rows[s])
                                                    if grown[s] and not scheduled[s] else None,
                                                    self.shock.describe(s)
                                                    if self.common_shock is not None and self.shock.confirmed[s]
                                                    else None)
                                      for s in explained]
        decision.reason[deferred] = [f"{r}; not re-trained: its last re-training is still being judged, or a "
                                     f"person put a model in service" for r in decision.reason[deferred]]
        waiting = np.flatnonzero(held & ~chosen & free)
        decision.reason[waiting] = [f"common shock: {self.shock.describe(s)}; re-trained once the ticks after it "
                                    f"confirm the change" for s in waiting]
        checked = picked[~(scheduled | at_once_alarm)[picked]]
        self.gain.decided(checked, features[checked])
        decision.escalations = escalations
        return decision

    def identify_streams(self, ids) -> None:
        self._slots = stream_slots(ids)

    def _stagger(self, n: int, period: int) -> np.ndarray:
        """Each of the ``n`` streams' phase in ``[0, period)``, from its identity (:func:`stream_slots`): the
        budget schedule's phase, the refresh's first offset, how many ticks before ``max_age`` the first
        backstop comes. Streams the agent did not identify (a policy used alone) are identified by index.

        >>> policy = MLMAPolicy()
        >>> policy.identify_streams(["b", "a"])
        >>> expected = (stream_slots(["b", "a"]) * 10).astype(int)
        >>> bool((policy._stagger(2, 10) == expected).all())
        True
        """
        slots = self._slots
        if len(slots) < n:
            slots = np.concatenate([slots, stream_slots(range(len(slots), n))])
        return np.floor(slots[:n] * period).astype(np.int64)

    def _explain(self, s, triggered, age, decision, p_degradation, p_bias, expected, scheduled=False,
                 backstop=False, cusum=None, page_hinkley=None, skill=None, growth=None, held=None) -> str:
        gain = f"expected gain {100 * expected:+.1f} %"
        if backstop:
            when = (f"max_age {self.max_age}" if age >= self.max_age
                    else f"its staggered turn before max_age {self.max_age}")
            return f"age backstop: model {int(age)} ticks old ({when}), served at once; {gain}"
        if scheduled:
            return f"schedule: model {int(age)} ticks old, refreshed every {self._period} ticks; {gain}"
        if cusum is not None:
            level, run, ratio, at_once = cusum
            alarm = (f"CUSUM: loss {ratio:.2f}x reference over the last {int(run)} ticks (cumulative excess "
                     f"{level:.2f} > threshold {self.cusum_threshold:g})" + (", served at once" if at_once else ""))
        extra = []
        if cusum is not None:
            extra.append(alarm)
        if page_hinkley is not None:
            level, run, mean, margin = page_hinkley
            extra.append(f"Page-Hinkley: scaled loss above {1 + margin:g}x its mean of {mean:.2f} (since the model "
                         f"serves or its last alarm), cumulative excess {level:.1f} > threshold "
                         f"{self.page_hinkley:g} over the last {int(run)} ticks")
        if skill is not None:
            mean, count, p_skill = skill
            extra.append(f"skill: error {mean:.2f}x the seasonal naive's on the same {int(count)} ticks, above "
                         f"1 + margin {self.skill_margin:g} (p={p_skill:.2g})")
        if growth is not None:
            fitted, now = growth
            extra.append(f"growth: model fitted on {int(fitted):,} rows, a re-training now has {int(now):,} "
                         f"({now / fitted:.1f}x, at least {self.growth:g}x)")
        if triggered:
            if np.isfinite(p_degradation) and (not np.isfinite(p_bias) or p_degradation <= p_bias):
                what = f"loss {decision.effect[s]:.2f}x reference"
            else:
                what = "mean error shifted from reference"
            also = "".join(f"; {e}" for e in extra)
            if held is not None:  # this tick's tests include the shock's: what confirmed it is the evidence
                return f"common shock: {held}{also}; {gain}"
            return f"{what} (p={decision.p_value[s]:.2g}){also}; {gain}"
        if extra:
            return f"{'; '.join(extra)}; tests p={decision.p_value[s]:.2g}; {gain}"
        if self.budget is None:
            return f"refresh: model {int(age)} ticks old; {gain}"
        return f"budget: among the highest expected gains (model {int(age)} ticks old); {gain}"

    # -- helpers --------------------------------------------------------------------------------------------
    def _test(self, idx: np.ndarray, current: np.ndarray):
        """p-value, effect and excess loss of streams ``idx``: newest tick and window, Bonferroni-combined.

        The same tests as :func:`mlma.monitor.degradation_test` on the time-ordered reference (daily blocks,
        default parameters apart from ``delta``), computed from the block sums kept in the ring: the
        block-means test does not depend on the order of the blocks, and only streams whose batch misses
        positions (hours) need the reference re-read to phase-match its blocks.
        """
        cur = _as_loss_matrix(current[idx], "current")
        # Block means of the reference over all positions, shared by both tests.
        full_means = _usable_means(self.ref_sum[idx], self.ref_count[idx], self.steps)
        n_reference = self.ref_count[idx].sum(axis=1)
        finite = np.isfinite(cur)
        n_current = finite.sum(axis=1)
        # One current block: the test's coverage rule keeps it whenever it has a value.
        cur_means = np.where(n_current > 0, np.where(finite, cur, 0.0).sum(axis=1) / np.maximum(n_current, 1),
                             np.nan)[:, None]
        ref_means = self._phase_matched(idx, full_means, finite)
        # The CUSUM (same streams, same tick) reads the same reference block means: kept for it, and only then.
        self._newest_means = (idx, full_means, ref_means) if self.cusum_threshold else None
        newest = self._block_test(cur_means, ref_means, n_current, n_reference, idx)
        p = newest.p_value
        effect = newest.effect
        excess = newest.current_mean - newest.reference_mean
        if self.window_ticks == 1:
            return p, effect, excess
        sustained = self._recent_test(idx, self.window_ticks, full_means, n_reference)
        p_window = sustained.p_value
        # Only streams with more than one tick in their window have a second, different test.
        two = (self.window_len[idx] > 1) & np.isfinite(p_window)
        use_window = two & (p_window < p)
        combined = np.where(two, np.minimum(1.0, 2 * np.fmin(p, p_window)), p)
        effect = np.where(use_window, sustained.effect, effect)
        excess = np.where(use_window, sustained.current_mean - sustained.reference_mean, excess)
        return combined, effect, excess

    def _recent_test(self, idx: np.ndarray, ticks: int, full_means: np.ndarray | None = None,
                     n_reference: np.ndarray | None = None):
        """The degradation test of streams ``idx``'s last ``ticks`` window ticks against their reference
        (``full_means``, ``n_reference``: the reference's block means over all positions and its number of
        losses, if already computed)."""
        if ticks < 1:
            raise ValueError(f"the recent window test needs at least one tick, got {ticks}")
        if full_means is None:
            full_means = _usable_means(self.ref_sum[idx], self.ref_count[idx], self.steps)
        if n_reference is None:
            n_reference = self.ref_count[idx].sum(axis=1)
        recent = slice(-ticks, None)
        counts = self.window_count[idx, recent]
        # A window with one complete tick covers every position; only the others need their positions
        # read from the losses.
        positions = np.ones((len(idx), self.steps), dtype=bool)
        gappy = np.flatnonzero(~(counts >= self.steps).any(axis=1))
        if len(gappy):
            positions[gappy] = np.isfinite(self.window[idx[gappy], recent]).any(axis=1)
        window_means = _usable_means(self.window_sum[idx, recent], counts, positions.sum(axis=1, keepdims=True))
        ref_means = self._phase_matched(idx, full_means, positions)
        return self._block_test(window_means, ref_means, counts.sum(axis=1), n_reference, idx)

    def _drop_window_tick(self, streams: np.ndarray, back: np.ndarray) -> None:
        """Blank the window tick ``back`` ticks before the newest of each of ``streams`` (0: the newest), so
        that it never enters the reference; a tick that already left the window is left alone."""
        inside = back < self.window_len[streams]
        streams, slot = streams[inside], self.probation_ticks - 1 - back[inside]
        self.window[streams, slot] = np.nan
        self.window_sum[streams, slot] = 0.0
        self.window_count[streams, slot] = 0.0
        self.window_bias[streams, slot] = np.nan

    def _after_shock_p(self, idx: np.ndarray, ticks: np.ndarray, bias: bool) -> np.ndarray:
        """p-values of held streams ``idx`` from their last ``ticks`` window ticks (those since the shock, at
        most ``window_ticks``) alone: the degradation test and, with ``bias``, the bias test, Bonferroni-combined
        as the tests of every tick are."""
        p = np.full(len(idx), np.nan)
        for m in np.unique(ticks):
            rows = np.flatnonzero(ticks == m)
            p_loss = self._recent_test(idx[rows], int(m)).p_value
            if bias:
                p_bias = self._bias_test(idx[rows], int(m))
                p_loss = np.where(np.isfinite(p_bias), np.minimum(1.0, 2 * np.fmin(p_loss, p_bias)), p_loss)
            p[rows] = p_loss
        return p
    def _cusum_excess(self, idx: np.ndarray, current: np.ndarray, tick_mean: np.ndarray) -> np.ndarray:
        """The CUSUM's value for streams ``idx``: the tick's mean loss (``tick_mean``) relative to the stream's
        reference level *when the CUSUM's run began*, minus 1 (NaN where there is no positive level).

        Against the rolling reference a sustained rise would be absorbed after probation (7 ticks) and the
        sum would stop growing, so only rises the tests find anyway could reach a threshold; the level is
        therefore frozen while the statistic is above 0 (Page's estimate of when the rise began) and taken
        afresh whenever it is back at 0. The hours the tick has are matched: the ratio to the reference's
        block means over the same hours (as the test reads them) is carried over to the frozen full-tick
        level, so that a tick without its busy hours looks neither better nor worse than it is.
        """
        kept = self._newest_means
        if kept is not None and kept[0] is idx:
            _, full_means, matched = kept
        else:
            full_means = _usable_means(self.ref_sum[idx], self.ref_count[idx], self.steps)
            matched = self._phase_matched(idx, full_means, np.isfinite(current[idx]))
        self._newest_means = None
        full, same_hours = _row_mean(full_means), _row_mean(matched)
        start = self.cusum.ticks[idx] == 0
        self.cusum_baseline[idx[start]] = full[start]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(same_hours > 0, tick_mean / same_hours, np.nan) * full / self.cusum_baseline[idx]
        return np.where(np.isfinite(ratio), ratio - 1.0, np.nan)

    def _deltas(self, streams: np.ndarray) -> np.ndarray:
        """The relevance margin of each of ``streams``: its own where a person set one (``set_overrides``),
        else ``delta``. The tests, the CUSUM's and Page-Hinkley's allowances all read it here."""
        own = self.delta_override[streams]
        return np.where(np.isfinite(own), own, self.delta)

    def _block_test(self, cur_means, ref_means, n_current, n_reference, idx=None):
        delta = self.delta
        if idx is not None and np.isfinite(self.delta_override[idx]).any():
            delta = self._deltas(idx)[:, None]
        return _test_block_means(cur_means, ref_means, n_current, n_reference, delta=delta,
                                 **_TEST_DEFAULTS)

    def _phase_matched(self, idx: np.ndarray, full_means: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Reference block means over ``positions`` (the hours the current batch has): the kept full-block
        means where the batch has every hour, the ring re-read for the few streams that miss some."""
        partial = ~positions.all(axis=1)
        if not partial.any():
            return full_means
        rows = np.flatnonzero(partial)
        blocks = self.ref[idx[rows]].astype(np.float64)
        means = full_means.copy()
        means[rows] = _masked_block_means(blocks, positions[rows].astype(np.float64),
                                          _MIN_COVERAGE)
        return means

    def _bias_test(self, idx: np.ndarray, ticks: int | None = None) -> np.ndarray:
        """Two-sided p-values of the bias test for streams ``idx``: the window's last ``ticks`` (default
        ``window_ticks``) mean signed errors against the reference's. The relevance margin is the loss test's: a
        shift of the mean error by at most ``delta`` times the reference's mean absolute loss is not worth a
        re-training."""
        recent = self.window_bias[idx, -(self.window_ticks if ticks is None else ticks):]
        delta = self._deltas(idx)
        count = self.ref_count[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(count > 0, self.ref_sum[idx].sum(axis=1) / np.maximum(count, 1), np.nan)
        if self.loss == "squared":
            scale = np.sqrt(scale)  # back to the errors' units (relative errors are in the relative loss's)
        margin = np.where(np.isfinite(scale), delta * scale, 0.0)
        return bias_shift_test(recent, self.ref_bias[idx], margin=margin, min_reference=MIN_REFERENCE_TICKS)

    def _push_window(self, mask: np.ndarray, current: np.ndarray, bias: np.ndarray) -> None:
        """Shift ``current`` into the probation window; a full window's oldest tick moves to the reference,
        whatever the tests said about it."""
        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        w = self.probation_ticks
        leaving = idx[self.window_len[idx] == w]
        if len(leaving):
            self._append_rows(leaving, self.window[leaving, 0], self.window_sum[leaving, 0],
                              self.window_count[leaving, 0], self.window_bias[leaving, 0])
        # Slot by slot, in place: shifting the selected rows with fancy indexing would build a temporary
        # copy of the whole window every tick (tens of MB for a large fleet, fresh pages each time).
        rows = mask[:, None]
        for j in range(w - 1):
            for buffer in (self.window_sum, self.window_count, self.window_bias):
                np.copyto(buffer[:, j], buffer[:, j + 1], where=mask)
            np.copyto(self.window[:, j], self.window[:, j + 1], where=rows)
        stored = _as_stored(current[idx])
        self.window[idx, -1] = stored
        self.window_sum[idx, -1], self.window_count[idx, -1] = _finite_sum_count(stored)
        self.window_bias[idx, -1] = bias[idx]
        self.window_len[idx] = np.minimum(self.window_len[idx] + 1, w)

    def _append(self, mask: np.ndarray, current: np.ndarray, bias: np.ndarray) -> None:
        idx = np.flatnonzero(mask)
        if len(idx):
            stored = _as_stored(current[idx])
            self._append_rows(idx, stored, *_finite_sum_count(stored), bias[idx])

    def _append_rows(self, idx: np.ndarray, stored: np.ndarray, sums: np.ndarray, counts: np.ndarray,
                     bias: np.ndarray) -> None:
        """Write batches ``stored`` (float32, as the ring keeps them) of streams ``idx`` into the reference
        ring, with their sums and counts of finite losses and their mean signed errors."""
        slots = self.ref_next[idx]
        self.ref[idx, slots] = stored
        self.ref_sum[idx, slots] = sums
        self.ref_count[idx, slots] = counts
        self.ref_bias[idx, slots] = bias
        self.ref_next[idx] = (self.ref_next[idx] + 1) % self.capacity
        self.ref_len[idx] = np.minimum(self.ref_len[idx] + 1, self.capacity)

    def _learn_typical(self, actuals: np.ndarray, clean: np.ndarray, weight: float = 0.2) -> None:
        idx = np.flatnonzero(clean)
        if not len(idx):
            return
        a = actuals[idx]
        count = np.isfinite(a).sum(axis=1).astype(np.float64)
        level = np.nanmean(a, axis=1)
        spread = np.nanstd(a, axis=1)
        for name, value in (("typical_count", count), ("typical_level", level), ("typical_spread", spread)):
            old = getattr(self, name)[idx]
            getattr(self, name)[idx] = np.where(np.isfinite(old), (1 - weight) * old + weight * value, value)


#: The degradation test's parameters other than ``delta`` (its defaults), as the policy uses them.
_TEST_PARAMETERS = inspect.signature(degradation_test).parameters
_TEST_DEFAULTS = {name: parameter.default for name, parameter in _TEST_PARAMETERS.items()
                  if parameter.kind is inspect.Parameter.KEYWORD_ONLY
                  and name not in ("delta", "block_length", "min_coverage")}
_MIN_COVERAGE = _TEST_PARAMETERS["min_coverage"].default


_NO_TICK = np.iinfo(np.int32).min // 2


MAX_TICKS = MAX_POLICY_TICKS
#: The most ticks a reference may hold: its ring is kept for every stream (1,000 daily ticks of hourly data are
#: 96 KB a stream); 10**9 asked for 894 GiB mid-replay.
MAX_REFERENCE_TICKS = 1_000


def _check_count(name: str, value, low: int, high: int, meaning: str = "") -> None:
    """A whole number of ticks (or of triggers) from ``low`` to ``high``, else a ValueError naming it.

    >>> _check_count("window_ticks", 10**6, 1, MAX_TICKS)
    Traceback (most recent call last):
    ...
    ValueError: window_ticks must be a whole number from 1 to 10,000, got 1000000
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        said = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name}{said} must be a whole number from {low} to {high:,}, got {value!r}")


def _check_threshold(name: str, value, meaning: str, trigger: str) -> None:
    """A cumulative trigger's threshold: a finite number > 0, or 0 / None for off."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                              or not value >= 0 or not math.isfinite(value)):
        raise ValueError(f"{name} ({meaning}) must be a finite number > 0, or 0 / None for no {trigger} trigger, "
                         f"got {value!r}")


def _mean_error(errors: np.ndarray | None, n: int) -> np.ndarray:
    """Each stream's mean signed error in the tick (NaN when none or unknown)."""
    return np.full(n, np.nan) if errors is None else _row_mean(errors)


def _row_mean(values: np.ndarray) -> np.ndarray:
    """Each row's mean of its finite values (NaN when none)."""
    finite = np.isfinite(values)
    count = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(finite, values, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)


def _as_stored(losses: np.ndarray) -> np.ndarray:
    """Losses as the rings store them (float32), a loss beyond float32's range kept as its largest value: cast
    as it was, it became infinite and was left out as a missing one, so a stream whose model forecast absurdly
    (1e300) never formed a reference and was never tested.

    >>> _as_stored(np.array([1.5, 1e300, np.nan])).tolist()
    [1.5, 3.4028234663852886e+38, nan]
    """
    limit = float(np.finfo(np.float32).max)
    return np.clip(losses, -limit, limit).astype(np.float32)


def _finite_sum_count(stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of the finite values of each row, in float64 from the stored (float32) values, as the
    test reads them."""
    values = stored.astype(np.float64)
    finite = np.isfinite(values)
    return np.where(finite, values, 0.0).sum(axis=1), finite.sum(axis=1).astype(np.float64)


def _usable_means(sums: np.ndarray, counts: np.ndarray, wanted) -> np.ndarray:
    """Block means from sums and counts of finite values, NaN for blocks that cover less than the test's
    ``min_coverage`` of the ``wanted`` positions (the same rule as the test's phase-matched means)."""
    needed = _MIN_COVERAGE * np.asarray(wanted, dtype=np.float64)
    usable = (counts > 0) & (counts >= needed - 1e-9)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(usable, sums / np.where(usable, counts, 1.0), np.nan)


def _fit_width(losses: np.ndarray, steps: int) -> np.ndarray:
    """Pad or cut a tick's losses to the reference's batch width."""
    if losses.shape[1] == steps:
        return losses
    out = np.full((losses.shape[0], steps), np.nan)
    width = min(steps, losses.shape[1])
    out[:, :width] = losses[:, :width]
    return out


def _highest(candidates: np.ndarray, score: np.ndarray, size: int, tiebreak=()) -> np.ndarray:
    """The ``size`` candidates with the highest score, ties broken by the ``tiebreak`` arrays in turn (all
    candidates when there are fewer)."""
    if candidates.sum() <= size:
        return candidates.copy()
    idx = np.flatnonzero(candidates)
    keys = [-np.asarray(key)[idx] for key in reversed(tiebreak)] + [-score[idx]]
    top = idx[np.lexsort(keys)[:size]]
    chosen = np.zeros_like(candidates)
    chosen[top] = True
    return chosen
