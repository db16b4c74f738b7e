"""Offline loaders of public real cohorts for the regression battery.

Each ``load_*`` function returns one public, real data set as a pandas DataFrame in its raw,
documented shape (the columns and codes of its source; nothing is renamed or recoded here).
Sources, all reachable without general network access:

* lifelines' bundled CSV files (a core dependency of trajectories);
* scikit-survival's bundled ARFF files (optional: ``pip install -e '.[bench]'``);
* the CSV files inside pymsm's wheel, fetched with ``pip download --no-deps pymsm==0.1.7``
  (pymsm itself is never installed or imported);
* R packages from Debian (``r-cran-survival``, ``r-cran-msm``), exported with ``Rscript``.

Every data set is cached as ``<name>.csv`` under ``~/.cache/trajectories/real-data/``, or under
the folder named by the ``TRAJECTORIES_REAL_DATA`` environment variable. The first call builds
the CSV (copy, unzip or R export); every call then reads that CSV, so the first and later calls
return identical frames. A missing source tool raises ``RuntimeError`` naming the install
command.

Battery shapes named in the docstrings (``SHAPES`` holds them per data set): multi-site with
tiny sites; five or more states; competing risks; recurrent events; repeated measurements;
delayed entry; illness-death; and plain single-event survival as a baseline.

``python benchmarks/real_data.py`` loads every data set, checks it against published counts
(asserts) and prints one line per data set.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

ENV_VAR = "TRAJECTORIES_REAL_DATA"
PYMSM_VERSION = "0.1.7"

MULTI_SITE = "multi-site with tiny sites"
FIVE_STATES = "five or more states"
COMPETING = "competing risks"
RECURRENT = "recurrent events"
REPEATED = "repeated measurements"
DELAYED = "delayed entry"
ILLNESS_DEATH = "illness-death"
SINGLE = "single event"

INSTALL_BENCH = "pip install -e '.[bench]'  (or: pip install scikit-survival)"
INSTALL_R = "apt-get update && apt-get install -y r-base-core r-cran-survival r-cran-msm"
_DEBIAN_R_PACKAGE = {"survival": "r-cran-survival", "msm": "r-cran-msm"}


# ---------------------------------------------------------------------------------------------
# cache and sources


def cache_dir() -> Path:
    """The cache folder: ``$TRAJECTORIES_REAL_DATA`` or ``~/.cache/trajectories/real-data``."""
    root = os.environ.get(ENV_VAR)
    if root:
        return Path(root).expanduser()
    return Path.home() / ".cache" / "trajectories" / "real-data"


def _cached(name: str, build: Callable[[Path], None], **read_csv: object) -> pd.DataFrame:
    """Read ``<cache>/<name>.csv``, first building it with ``build(tmp_path)`` if absent."""
    path = cache_dir() / f"{name}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp.csv")
        try:
            build(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return pd.read_csv(path, **read_csv)


def _write(frame: pd.DataFrame) -> Callable[[Path], None]:
    return lambda tmp: frame.to_csv(tmp, index=False)


def _lifelines(name: str, loader: str, index_name: str | None = None) -> pd.DataFrame:
    def build(tmp: Path) -> None:
        try:
            import lifelines.datasets as datasets
        except ImportError as exc:
            raise RuntimeError(
                f"real-data {name!r} needs lifelines: pip install 'lifelines>=0.29'"
            ) from exc
        frame = getattr(datasets, loader)()
        if index_name is not None:  # the file's first column is read as the index
            frame = frame.rename_axis(index_name).reset_index()
        _write(frame)(tmp)

    return _cached(name, build)


def _sksurv_arff(name: str, filename: str) -> pd.DataFrame:
    """The raw ARFF file that scikit-survival ships (all its columns, not sksurv's X/y split)."""

    def build(tmp: Path) -> None:
        try:
            from sksurv.io import loadarff
        except ImportError as exc:
            raise RuntimeError(
                f"real-data {name!r} needs scikit-survival's bundled data: {INSTALL_BENCH}"
            ) from exc
        resource = importlib.resources.files("sksurv.datasets") / "data" / filename
        with importlib.resources.as_file(resource) as arff:
            frame = loadarff(str(arff))
        _write(frame)(tmp)

    return _cached(name, build)


def _pymsm_wheel() -> Path:
    """pymsm's wheel in ``<cache>/wheels``, downloaded with ``pip download`` if absent."""
    folder = cache_dir() / "wheels"
    found = sorted(folder.glob(f"pymsm-{PYMSM_VERSION}-*.whl"))
    if found:
        return found[-1]
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        f"pymsm=={PYMSM_VERSION}",
        "-d",
        str(folder),
    ]
    hint = (
        f"pip download --no-deps pymsm=={PYMSM_VERSION} -d {folder}"
        " (needs pip and access to PyPI; or copy the wheel there by hand)"
    )
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"could not fetch pymsm's wheel ({exc}); run: {hint}") from exc
    found = sorted(folder.glob(f"pymsm-{PYMSM_VERSION}-*.whl"))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"could not fetch pymsm's wheel: {' | '.join(tail)}; run: {hint}")
    return found[-1]


def _pymsm_csv(name: str, member: str, rownames: bool) -> pd.DataFrame:
    """A CSV from pymsm's wheel; ``rownames`` drops R's unnamed row-name column."""

    def build(tmp: Path) -> None:
        with zipfile.ZipFile(_pymsm_wheel()) as wheel, wheel.open(member) as raw:
            frame = pd.read_csv(raw, index_col=0 if rownames else None)
        _write(frame)(tmp)

    return _cached(name, build)


_R_EXPORT = (
    "a <- commandArgs(TRUE); "
    "if (!requireNamespace(a[1], quietly = TRUE)) quit(save = 'no', status = 3); "
    "d <- getExportedValue(a[1], a[2]); "
    "utils::write.csv(as.data.frame(d), a[3], row.names = FALSE, na = '')"
)


def _r_dataset(name: str, package: str, dataset: str, **read_csv: object) -> pd.DataFrame:
    """An R data set exported with ``Rscript`` (factors as labels, dates as ISO strings)."""
    deb = _DEBIAN_R_PACKAGE.get(package, f"r-cran-{package.lower()}")

    def build(tmp: Path) -> None:
        rscript = shutil.which("Rscript")
        if rscript is None:
            raise RuntimeError(
                f"real-data {name!r} is exported from R's {package}::{dataset} but Rscript is "
                f"not on PATH; install: apt-get update && apt-get install -y r-base-core {deb}"
            )
        command = [rscript, "--vanilla", "-e", _R_EXPORT, package, dataset, str(tmp)]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"Rscript failed exporting {package}::{dataset}: {exc}") from exc
        if proc.returncode == 3:
            raise RuntimeError(
                f"real-data {name!r} needs the R package {package!r}: apt-get install -y {deb}"
            )
        if proc.returncode != 0 or not tmp.exists():
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"Rscript failed exporting {package}::{dataset}: {tail}")

    return _cached(name, build, **read_csv)


# ---------------------------------------------------------------------------------------------
# lifelines


def load_lung() -> pd.DataFrame:
    """NCCTG advanced lung cancer (R ``survival::lung``, via lifelines). Shape: multi-site.

    Loprinzi et al. (1994) J Clin Oncol 12:601-7, North Central Cancer Treatment Group; data as
    in Therneau's R package survival. 228 patients, one row each; 165 deaths.

    Columns: ``inst`` institution code (18 sites, 2 to 36 patients, one patient missing),
    ``time`` survival time in days, ``status`` 1 = dead, 0 = censored (lifelines recodes R's
    1 = censored / 2 = dead), ``age`` years, ``sex`` 1 = male, 2 = female, ``ph.ecog`` ECOG
    score 0-4 by physician, ``ph.karno`` / ``pat.karno`` Karnofsky score (0 bad - 100 good) by
    physician / patient, ``meal.cal`` calories at meals, ``wt.loss`` weight loss over the last
    six months in pounds.

    Battery: multi-site with tiny sites (``inst``), single event.
    """
    return _lifelines("lung", "load_lung")


def load_stanford_heart_transplants() -> pd.DataFrame:
    """Stanford heart transplant programme (R ``survival::heart``, via lifelines).

    Crowley & Hu (1977) JASA 72:27-36; the counting-process form of Therneau's survival
    package. 103 patients, 172 rows; 69 received a transplant; 75 deaths.

    Columns: ``id`` patient, ``start``/``stop`` interval (days since acceptance into the
    programme), ``event`` 1 = died at ``stop``, ``transplant`` 0 = waiting-list interval,
    1 = post-transplant interval, ``age`` age - 48 years, ``year`` year of acceptance in years
    since 1 Nov 1967, ``surgery`` prior bypass surgery 1 = yes. A transplanted patient has two
    rows: (0, wait] with ``transplant`` 0 and (wait, stop] with ``transplant`` 1 (patient 38's
    transplant on the day of death is placed at day 4.5).

    Battery: delayed entry (post-transplant rows enter at ``start`` > 0), illness-death
    (waiting -> transplanted -> dead, plus waiting -> dead).
    """
    return _lifelines("stanford_heart", "load_stanford_heart_transplants")


def load_recur() -> pd.DataFrame:
    """Recurrent soreness episodes (Hosmer, Lemeshow & May 2008, via lifelines).

    Applied Survival Analysis, 2nd ed., Wiley: the ``recur`` data. 400 subjects, 1296 rows;
    939 episodes (``CENSOR`` 1). Rows are in the file's order, not sorted by time.

    Columns: ``ID`` subject 1-400, ``AGE`` years, ``TREAT`` 0 = new, 1 = old treatment,
    ``TIME0`` day of the previous episode (0 at start), ``TIME1`` day of this episode or of
    censoring, ``CENSOR`` 1 = an episode occurred at ``TIME1``, 0 = censored, ``EVENT``
    episode number 1-4. At most four episodes are recorded; 186 subjects have four and then no
    censoring row.

    Battery: recurrent events (gap / counting-process rows).
    """
    return _lifelines("recur", "load_recur")


def load_gbsg2() -> pd.DataFrame:
    """German Breast Cancer Study Group 2 trial (R ``TH.data::GBSG2``, via lifelines).

    Schumacher et al. (1994) J Clin Oncol 12:2086-93; Sauerbrei & Royston (1999) JRSS A
    162:71-94. 686 women, one row each; 299 events of recurrence-free survival.

    Columns: ``horTh`` hormonal therapy no/yes, ``age`` years, ``menostat`` Pre/Post,
    ``tsize`` tumour size mm, ``tgrade`` I/II/III, ``pnodes`` positive nodes, ``progrec`` /
    ``estrec`` progesterone / oestrogen receptor fmol, ``time`` recurrence-free survival time in
    days, ``cens`` 1 = recurrence or death, 0 = censored.

    Battery: single event (baseline).
    """
    return _lifelines("gbsg2", "load_gbsg2")


def load_rossi() -> pd.DataFrame:
    """Recidivism of released Maryland prisoners (Rossi, Berk & Lenihan 1980, via lifelines).

    Rossi et al. (1980) Money, Work, and Crime, Academic Press; used in Allison (1995) and
    Fox's Cox-regression appendix. 432 men, one row each; 114 arrests within 52 weeks.

    Columns: ``week`` week of first arrest or 52 (censored), ``arrest`` 1 = arrested,
    ``fin`` financial aid 1 = yes (randomised), ``age`` years at release, ``race`` 1 = black,
    ``wexp`` full-time work experience 1 = yes, ``mar`` married 1 = yes, ``paro`` released on
    parole 1 = yes, ``prio`` number of prior convictions.

    Battery: single event (baseline), time in weeks.
    """
    return _lifelines("rossi", "load_rossi")


def load_lymph_node() -> pd.DataFrame:
    """GBSG node-positive breast cancer with recurrence and death times (via lifelines).

    Schumacher et al. (1994) J Clin Oncol 12:2086-93 and Hosmer, Lemeshow & May (2008), the
    ``gbcs`` data: the same 686 women as ``gbsg2`` with dates and overall survival added.
    299 recurrence-or-death events, 171 deaths.

    Columns: ``id``, ``diagdateb`` / ``recdate`` / ``deathdate`` dates (dd-mm-yyyy),
    ``age`` years, ``menopause`` 1 = pre, 2 = post, ``hormone`` therapy 1 = no, 2 = yes
    (both checked against GBSG2's labels), ``size`` mm, ``grade`` 1-3, ``nodes``,
    ``prog_recp`` / ``estrg_recp`` fmol, ``rectime`` days to recurrence or death,
    ``censrec`` 1 = recurrence or death (every death is also flagged here: it is GBSG2's
    recurrence-free-survival event), ``survtime`` days to death or censoring, ``censdead``
    1 = dead.

    Battery: illness-death (recurrence then death; a death whose ``rectime`` equals
    ``survtime`` is a death without recorded recurrence).
    """
    return _lifelines("lymph_node", "load_lymph_node", index_name="id")


def load_macs() -> pd.DataFrame:
    """Multicenter AIDS Cohort Study, survival after AIDS diagnosis (via lifelines).

    Cole & Hudgens (2010) AIDS 24:2423-31 ("Survival analysis in infectious disease research:
    describing events in time"). 78 persons, one row each; 27 deaths; 42 enter after diagnosis.

    Columns: ``i`` person, ``AIDSY`` calendar date of AIDS diagnosis (decimal year), ``W``
    years from AIDS diagnosis to study entry (left truncation), ``T`` years from diagnosis to
    death or censoring, ``D`` 1 = died.

    Battery: delayed entry (time origin at diagnosis, at risk only from ``W``).
    """
    return _lifelines("macs", "load_multicenter_aids_cohort_study", index_name="i")


# ---------------------------------------------------------------------------------------------
# scikit-survival (raw ARFF files)


def load_bmt() -> pd.DataFrame:
    """Stem-cell transplantation for acute leukaemia (Scrucca et al. 2007, via scikit-survival).

    Scrucca, Santucci & Aversa (2007) Bone Marrow Transplant 40:381-7, "Competing risk analysis
    using R". 35 patients, one row each.

    Columns: ``dis`` 0 = ALL, 1 = AML, ``ftime`` follow-up in months, ``status`` 0 = censored
    (11), 1 = transplant-related mortality (9), 2 = relapse (15).

    Battery: competing risks.
    """
    return _sksurv_arff("bmt", "bmt.arff")


def load_cgvhd() -> pd.DataFrame:
    """Chronic graft-versus-host disease trial (Pintilie 2006, via scikit-survival).

    Pintilie (2006) Competing Risks: A Practical Perspective, Wiley: a 100-patient subsample of a
    multicentre randomised trial of bone marrow vs peripheral blood cells in allogeneic
    transplants for myeloid malignancy. 100 patients, one row each, all times in years since
    transplant.

    Columns: ``stnum`` patient, ``dx`` AML/CML, ``tx`` BM = bone marrow, PB = peripheral
    blood (randomised), ``extent`` L = limited, E = extensive, ``age`` years, ``agvhdgd`` grade
    of acute GVHD, ``survtime`` / ``stat`` (1 = dead), ``reltime`` / ``rcens`` (1 = relapse),
    ``agvhtime`` / ``agvh`` (1 = acute GVHD), ``cgvhtime`` / ``cgvh`` (1 = chronic GVHD): each
    a time to event or last follow-up and its indicator. scikit-survival's ``load_cgvhd`` takes
    the first of (cGVHD, relapse, death): 86 cGVHD, 5 relapse, 5 death, 4 censored.

    Battery: competing risks (first event); several event times per person.
    """
    return _sksurv_arff("cgvhd", "cgvhd.arff")


def load_flchain() -> pd.DataFrame:
    """Serum free light chain in the Olmsted County population (survival::flchain, via sksurv).

    Dispenzieri et al. (2012) Mayo Clin Proc 87:512-23; Kyle et al. (2006) NEJM 354:1362-9;
    data in Therneau's survival package. 7874 residents aged 50+, one row each; 2169 deaths.

    Columns: ``age`` years, ``sex`` F/M, ``sample.yr`` year of the blood sample, ``kappa`` /
    ``lambda`` serum free light chain portions (mg/dl), ``flc.grp`` FLC decile group 1-10,
    ``creatinine`` serum creatinine (mg/dl), ``mgus`` diagnosed with MGUS no/yes, ``futime``
    days from sample to death or last contact, ``death`` alive/dead, ``chapter`` ICD-9 chapter
    of the primary cause of death (missing when alive).

    Battery: competing risks (cause-specific death by ``chapter``), single event.
    """
    return _sksurv_arff("flchain", "flchain.arff")


def load_aids() -> pd.DataFrame:
    """ACTG 320 trial of indinavir in HIV (Hammer et al. 1997, via scikit-survival).

    Hammer et al. (1997) NEJM 337:725-33; data from Hosmer, Lemeshow & May (2008), the
    ``actg320`` file. 1151 patients, one row each; 96 reached AIDS or death, 26 died.

    Columns: ``time`` days to AIDS-defining diagnosis or death, ``censor`` 1 = that event,
    ``time_d`` days to death, ``censor_d`` 1 = dead, ``tx`` 1 = indinavir + ZDV + 3TC,
    0 = ZDV + 3TC, ``txgrp`` 1-4 treatment by CD4 stratum, ``strat2`` CD4 stratum 0 = <= 50,
    1 = > 50, ``sex`` 1 = male, 2 = female, ``raceth`` race/ethnicity 1-5, ``ivdrug`` 1 = never,
    2 = currently, 3 = previously, ``hemophil`` 1 = haemophiliac, ``karnof`` Karnofsky score
    (70-100), ``cd4`` baseline CD4 count (cells/mm^3), ``priorzdv`` months of prior ZDV,
    ``age`` years.

    Battery: illness-death (AIDS -> death from the two endpoints).
    """
    return _sksurv_arff("aids", "actg320.arff")


# ---------------------------------------------------------------------------------------------
# pymsm's wheel (CSV files only; pymsm is never installed)


def load_ebmt4() -> pd.DataFrame:
    """EBMT transplant registry, six-state model (R ``mstate::ebmt4``, from pymsm's wheel).

    European Society for Blood and Marrow Transplantation; Putter, Fiocco & Geskus (2007)
    Stat Med 26:2389-430 and de Wreede, Fiocco & Putter (2011) JSS 38(7), mstate package.
    2279 patients, one row each (wide); all times in days since transplant.

    States: 1 transplant, 2 recovery (platelet recovery), 3 adverse event (acute GvHD),
    4 recovery and adverse event, 5 relapse, 6 death. Columns: ``id``, ``rec`` / ``rec.s``,
    ``ae`` / ``ae.s``, ``recae`` / ``recae.s``, ``rel`` / ``rel.s``, ``srv`` / ``srv.s``: time
    of entry into state 2, 3, 4, 5 and of death, or of last follow-up, with indicator 1 = entered.
    Covariates: ``year`` of transplant 1985-1989 / 1990-1994 / 1995-1998, ``agecl`` age class
    <=20 / 20-40 / >40, ``proph`` GvHD prophylaxis no/yes, ``match`` donor-recipient gender
    mismatch. First transitions out of state 1: 785 recovery, 907 AE, 95 relapse, 160 death.

    Battery: five or more states (6 states, 12 transitions), competing risks, illness-death.
    """
    return _pymsm_csv("ebmt4", "pymsm/datasets/ebmt_wide.csv", rownames=True)


def load_ebmt4_long() -> pd.DataFrame:
    """``mstate::msprep`` long form of ``ebmt4`` (from pymsm's wheel).

    The same 2279 patients as ``load_ebmt4``, one row per patient and possible transition out of
    each state they visited: 15512 rows. Columns: ``id``, ``from`` / ``to`` states 1-6 (see
    ``load_ebmt4``), ``trans`` transition number 1-12, ``Tstart`` / ``Tstop`` days since
    transplant (entry into ``from`` and exit), ``time`` = Tstop - Tstart, ``status`` 1 = this
    transition happened; covariates ``match``, ``proph``, ``year``, ``agecl`` as in ebmt4.

    Battery: five or more states, delayed entry (``Tstart`` > 0 for later states).
    """
    return _pymsm_csv("ebmt4_long", "pymsm/datasets/ebmt_long.csv", rownames=True)


def load_rotterdam() -> pd.DataFrame:
    """Rotterdam tumour bank breast cancer (R ``survival::rotterdam``, from pymsm's wheel).

    Royston & Altman (2013) BMC Med Res Methodol 13:33; data in Therneau's survival package.
    2982 patients, one row each; 1518 relapses, 1272 deaths (43 deaths without relapse after the
    relapse censoring time, see R's help page).

    Columns: ``pid``, ``year`` of surgery, ``age`` at surgery, ``meno`` 0 = pre, 1 = post-
    menopausal, ``size`` <=20 / 20-50 / >50 mm, ``grade`` 2-3, ``nodes`` positive nodes,
    ``pgr`` / ``er`` progesterone / oestrogen receptors fmol/l, ``hormon`` / ``chemo`` 1 = given,
    ``rtime`` days to relapse or last follow-up, ``recur`` 1 = relapse, ``dtime`` days to death
    or last follow-up, ``death`` 1 = dead.

    Battery: illness-death (surgery -> relapse -> death).
    """
    return _pymsm_csv("rotterdam", "pymsm/datasets/rotterdam.csv", rownames=False)


def load_aidssi() -> pd.DataFrame:
    """Amsterdam Cohort Studies: AIDS vs SI switch (R ``mstate::aidssi``, from pymsm's wheel).

    Amsterdam Cohort Studies on HIV infection and AIDS; Putter, Fiocco & Geskus (2007) Stat Med
    26:2389-430; Geskus (2015) Data Analysis with Competing Risks and Intermediate States.
    329 men, one row each.

    Columns: ``patnr``, ``time`` years from HIV infection to the first event or censoring,
    ``status`` 0 = event-free (107), 1 = AIDS (114), 2 = SI switch (108), ``cause`` the same as
    a label, ``ccr5`` genotype WW = wild type, WM = one mutant allele (5 missing).

    Battery: competing risks.
    """
    return _pymsm_csv("aidssi", "pymsm/datasets/aidssi.csv", rownames=True)


def load_covid_hosp() -> pd.DataFrame:
    """Israeli COVID-19 hospitalisations, multi-state paths (Roimi et al. 2021, pymsm's wheel).

    Roimi et al. (2021) JAMIA 28:1188-96; the public ``data_for_paper.csv`` of the
    covid-19-multi-state-model project. 2675 patients, one row each (wide); times in days.

    Columns used by pymsm: ``id``, ``sex`` Male/Female, ``age_group`` 5-year band such as
    "[55.0, 60.0)", ``new_type0`` .. ``new_type10`` the k-th state visited, coded 23 = mild or
    moderate, 4 = severe, 16 = discharged/recovered, 5 = deceased, 0 = no further state;
    ``new_time1`` .. ``new_time10`` days spent in state k-1 before entering state k (empty
    after the last), ``current_time`` days of follow-up. The raw ``typeK`` / ``timeK`` /
    ``current_type`` / ``first_date`` columns come from the source and are not documented there.

    Battery: recurrent events (repeated severe episodes and readmissions), multi-state with
    four states.
    """
    return _pymsm_csv("covid_hosp", "pymsm/datasets/covid_hosp_data.csv", rownames=False)


# ---------------------------------------------------------------------------------------------
# R packages from Debian


def load_cgd() -> pd.DataFrame:
    """Chronic granulomatous disease trial of gamma interferon (R ``survival::cgd``).

    Fleming & Harrington (1991) Counting Processes and Survival Analysis, appendix D.2; the
    counting-process form in Therneau's survival package. 128 patients, 203 rows; 76 serious
    infections (56 on placebo, 20 on rIFN-g).

    Columns: ``id``, ``center`` enrolling hospital (13, 4 to 26 patients), ``random`` date of
    randomisation, ``treat`` placebo / rIFN-g, ``sex`` male/female, ``age`` years, ``height``
    cm, ``weight`` kg, ``inherit`` X-linked / autosomal, ``steroids`` / ``propylac`` use of
    steroids / prophylactic antibiotics at entry 1 = yes, ``hos.cat`` US:NIH / US:other /
    Europe:Amsterdam / Europe:other, ``tstart`` / ``tstop`` interval in days since
    randomisation, ``enum`` row number within patient, ``status`` 1 = the interval ends with
    an infection.

    Battery: recurrent events, multi-site with tiny sites.
    """
    return _r_dataset("cgd", "survival", "cgd", parse_dates=["random"])


def load_pbcseq() -> pd.DataFrame:
    """Mayo Clinic primary biliary cirrhosis, sequential labs (R ``survival::pbcseq``).

    Fleming & Harrington (1991); Murtaugh et al. (1994) Hepatology 20:126-34; Therneau &
    Grambsch (2000) Modeling Survival Data. 312 randomised patients, 1945 visit rows.

    Columns: ``id``, ``futime`` days from registration to death, transplant or censoring,
    ``status`` at ``futime`` 0 = censored (143), 1 = transplant (29), 2 = dead (140), ``trt``
    1 = D-penicillamine (158), 0 = placebo (154) (R's help says 1/2; the data hold 0/1),
    ``age`` years, ``sex`` m/f, ``day`` days from enrolment to this visit; measured at ``day``:
    ``ascites`` / ``hepato`` / ``spiders`` 1 = present, ``edema`` 0 none, 0.5 untreated or
    successfully treated, 1 despite diuretics, ``bili`` bilirubin mg/dl, ``chol`` cholesterol
    mg/dl, ``albumin`` g/dl, ``alk.phos`` alkaline phosphatase U/l, ``ast`` U/ml, ``platelet``
    count, ``protime`` standardised clotting time (s), ``stage`` histologic stage 1-4. Lab
    values are often missing at the last, unscheduled visits (informative missingness).

    Battery: repeated measurements, competing risks (transplant vs death).
    """
    return _r_dataset("pbcseq", "survival", "pbcseq")


def load_mgus2() -> pd.DataFrame:
    """Monoclonal gammopathy of undetermined significance (R ``survival::mgus2``).

    Kyle et al. (2002) NEJM 346:564-9; Mayo Clinic data in Therneau's survival package (see its
    "compete" vignette). 1384 persons, one row each; 115 progressions to plasma cell malignancy
    (PCM), 963 deaths (103 after progression).

    Columns: ``id``, ``age`` at diagnosis in years, ``sex`` F/M, ``dxyr`` year of diagnosis,
    ``hgb`` haemoglobin g/dl, ``creat`` creatinine mg/dl, ``mspike`` size of the monoclonal
    serum spike g/dl, ``ptime`` months to PCM or last contact, ``pstat`` 1 = PCM,
    ``futime`` months to death or last contact, ``death`` 1 = dead.

    Battery: illness-death (MGUS -> PCM -> death), competing risks (PCM vs death before PCM).
    """
    return _r_dataset("mgus2", "survival", "mgus2")


def load_colon() -> pd.DataFrame:
    """Adjuvant levamisole / 5-FU for stage B/C colon cancer (R ``survival::colon``).

    Moertel et al. (1990) NEJM 322:352-8; Laurie et al. (1989) J Clin Oncol 7:1447-56; Lin
    (1994) Stat Med 13:2233-47. 929 patients, 1858 rows (two per patient); 468 recurrences,
    452 deaths.

    Columns: ``id``, ``study`` 1, ``rx`` Obs / Lev / Lev+5FU, ``sex`` 1 = male, ``age`` years,
    ``obstruct`` / ``perfor`` / ``adhere`` obstruction / perforation / adherence 1 = yes,
    ``nodes`` positive lymph nodes, ``differ`` 1 well, 2 moderate, 3 poor, ``extent`` 1
    submucosa, 2 muscle, 3 serosa, 4 contiguous structures, ``surg`` time from surgery to
    registration 0 short, 1 long, ``node4`` > 4 positive nodes, ``etype`` 1 = recurrence row,
    2 = death row, ``time`` days to that event or censoring, ``status`` 1 = event.

    Battery: illness-death (recurrence then death).
    """
    return _r_dataset("colon", "survival", "colon")


def load_cav() -> pd.DataFrame:
    """Cardiac allograft vasculopathy after heart transplant (R ``msm::cav``).

    Sharples et al. (2003) Transplantation 76:679-82; Papworth Hospital; Jackson's msm package.
    622 patients, 2846 rows (approximately yearly angiograms).

    Columns: ``PTNUM`` patient, ``age`` recipient age at examination (years), ``years`` time
    of examination in years after transplant, ``dage`` donor age, ``sex`` 0 = male,
    1 = female, ``pdiag`` primary diagnosis (IHD, IDC, ...), ``cumrej`` cumulative acute
    rejection episodes, ``state`` 1 = no CAV, 2 = mild/moderate, 3 = severe, 4 = death,
    ``firstobs`` 1 = the transplant row, ``statemax`` highest state so far.

    Battery: repeated measurements (panel-observed states), four states with death.
    """
    return _r_dataset("cav", "msm", "cav")


# ---------------------------------------------------------------------------------------------
# registry

DATASETS: dict[str, Callable[[], pd.DataFrame]] = {
    "lung": load_lung,
    "stanford_heart": load_stanford_heart_transplants,
    "recur": load_recur,
    "gbsg2": load_gbsg2,
    "rossi": load_rossi,
    "lymph_node": load_lymph_node,
    "macs": load_macs,
    "bmt": load_bmt,
    "cgvhd": load_cgvhd,
    "flchain": load_flchain,
    "aids": load_aids,
    "ebmt4": load_ebmt4,
    "ebmt4_long": load_ebmt4_long,
    "rotterdam": load_rotterdam,
    "aidssi": load_aidssi,
    "covid_hosp": load_covid_hosp,
    "cgd": load_cgd,
    "pbcseq": load_pbcseq,
    "mgus2": load_mgus2,
    "colon": load_colon,
    "cav": load_cav,
}

SOURCES: dict[str, str] = {
    **dict.fromkeys(
        ["lung", "stanford_heart", "recur", "gbsg2", "rossi", "lymph_node", "macs"], "lifelines"
    ),
    **dict.fromkeys(["bmt", "cgvhd", "flchain", "aids"], "sksurv"),
    **dict.fromkeys(["ebmt4", "ebmt4_long", "rotterdam", "aidssi", "covid_hosp"], "pymsm-whl"),
    **dict.fromkeys(["cgd", "pbcseq", "mgus2", "colon"], "R survival"),
    "cav": "R msm",
}

SHAPES: dict[str, tuple[str, ...]] = {
    "lung": (MULTI_SITE, SINGLE),
    "stanford_heart": (DELAYED, ILLNESS_DEATH),
    "recur": (RECURRENT,),
    "gbsg2": (SINGLE,),
    "rossi": (SINGLE,),
    "lymph_node": (ILLNESS_DEATH,),
    "macs": (DELAYED,),
    "bmt": (COMPETING,),
    "cgvhd": (COMPETING,),
    "flchain": (COMPETING, SINGLE),
    "aids": (ILLNESS_DEATH,),
    "ebmt4": (FIVE_STATES, COMPETING, ILLNESS_DEATH),
    "ebmt4_long": (FIVE_STATES, DELAYED),
    "rotterdam": (ILLNESS_DEATH,),
    "aidssi": (COMPETING,),
    "covid_hosp": (RECURRENT,),
    "cgd": (RECURRENT, MULTI_SITE),
    "pbcseq": (REPEATED, COMPETING),
    "mgus2": (ILLNESS_DEATH, COMPETING),
    "colon": (ILLNESS_DEATH,),
    "cav": (REPEATED,),
}

ID_COLUMNS: dict[str, str] = {
    "stanford_heart": "id",
    "recur": "ID",
    "ebmt4_long": "id",
    "cgd": "id",
    "pbcseq": "id",
    "colon": "id",
    "cav": "PTNUM",
}


# ---------------------------------------------------------------------------------------------
# published facts, checked by ``python benchmarks/real_data.py``


def _counts(series: pd.Series) -> dict:
    return {key: int(n) for key, n in series.value_counts(dropna=False).sort_index().items()}


def _check(name: str, df: pd.DataFrame) -> str:
    """Assert published facts about one data set; return them as text."""
    if name == "lung":
        sites = df["inst"].value_counts()
        assert len(df) == 228 and int(df["status"].sum()) == 165
        assert len(sites) == 18 and int(sites.min()) == 2
        return f"165 deaths; 18 sites, smallest {int(sites.min())}, largest {int(sites.max())}"
    if name == "stanford_heart":
        per = df.groupby("id")
        assert len(df) == 172 and len(per) == 103
        assert int(df["event"].sum()) == 75 and int(df["transplant"].sum()) == 69
        return f"75 deaths; 69 transplanted; {int((df['start'] > 0).sum())} rows enter late"
    if name == "recur":
        assert len(df) == 1296 and df["ID"].nunique() == 400 and int(df["CENSOR"].sum()) == 939
        return f"939 episodes; episodes per subject {_counts(df.groupby('ID').size())}"
    if name == "gbsg2":
        assert len(df) == 686 and int(df["cens"].sum()) == 299
        return "299 recurrence-or-death events"
    if name == "rossi":
        assert len(df) == 432 and int(df["arrest"].sum()) == 114
        return "114 arrests in 52 weeks"
    if name == "lymph_node":
        assert len(df) == 686 and int(df["censrec"].sum()) == 299
        assert int(df["censdead"].sum()) == 171
        first = ((df["censdead"] == 1) & (df["rectime"] == df["survtime"])).sum()
        return f"299 recurrence-or-death, 171 deaths, {int(first)} deaths as first event"
    if name == "macs":
        assert len(df) == 78 and int(df["D"].sum()) == 27
        return f"27 deaths; {int((df['W'] > 0).sum())} delayed entries (W > 0)"
    if name == "bmt":
        assert len(df) == 35 and _counts(df["status"]) == {0: 11, 1: 9, 2: 15}
        return "status 0/1/2 = 11 censored / 9 TRM / 15 relapse"
    if name == "cgvhd":
        first = df[["survtime", "reltime", "cgvhtime"]].min(axis=1)
        status = (
            ((first == df["cgvhtime"]) & (df["cgvh"] == 1)).astype(int)
            + 2 * ((first == df["reltime"]) & (df["rcens"] == 1))
            + 3 * ((first == df["survtime"]) & (df["stat"] == 1))
        )
        assert len(df) == 100 and _counts(status) == {0: 4, 1: 86, 2: 5, 3: 5}
        return "first event: 86 cGVHD / 5 relapse / 5 death / 4 censored"
    if name == "flchain":
        assert len(df) == 7874 and int((df["death"] == "dead").sum()) == 2169
        return f"2169 deaths in {df['chapter'].nunique()} ICD-9 chapters"
    if name == "aids":
        assert len(df) == 1151 and int(df["censor"].sum()) == 96 and int(df["censor_d"].sum()) == 26
        return "96 AIDS-or-death, 26 deaths"
    if name == "ebmt4":
        assert len(df) == 2279 and df["id"].nunique() == 2279
        absorbed = ((df["rel.s"] == 1) | (df["srv.s"] == 1)).sum()
        assert int(df["rel.s"].sum()) == 370 and int(absorbed) == 903  # 370 relapse + 533 death
        return "370 relapses, 533 deaths before relapse (903 absorbed), 6 states"
    if name == "ebmt4_long":
        done = df[df["status"] == 1].groupby(["from", "to"]).size()
        assert len(df) == 15512 and df["id"].nunique() == 2279 and df["trans"].max() == 12
        assert [int(done[(1, to)]) for to in (2, 3, 5, 6)] == [785, 907, 95, 160]
        return "12 transitions; out of state 1: 785 rec, 907 AE, 95 relapse, 160 death"
    if name == "rotterdam":
        assert len(df) == 2982 and int(df["recur"].sum()) == 1518 and int(df["death"].sum()) == 1272
        odd = (df["death"] == 1) & (df["recur"] == 0) & (df["dtime"] > df["rtime"])
        assert int(odd.sum()) == 43
        return "1518 relapses, 1272 deaths, 43 deaths after relapse censoring"
    if name == "aidssi":
        assert len(df) == 329 and _counts(df["status"]) == {0: 107, 1: 114, 2: 108}
        return "107 event-free / 114 AIDS / 108 SI"
    if name == "covid_hosp":
        assert len(df) == 2675 and df["id"].nunique() == 2675
        dead = (df.filter(regex=r"^new_type\d+$") == 5).any(axis=1).sum()
        return f"{int(dead)} deceased"
    if name == "cgd":
        first = df.drop_duplicates("id")
        sizes = first["center"].value_counts()
        assert len(df) == 203 and len(first) == 128 and int(df["status"].sum()) == 76
        assert len(sizes) == 13 and int(sizes.min()) == 4
        by_arm = df.groupby("treat")["status"].sum()
        assert int(by_arm["placebo"]) == 56 and int(by_arm["rIFN-g"]) == 20
        return "76 infections (56 placebo, 20 rIFN-g); 13 centres of 4 to 26 patients"
    if name == "pbcseq":
        first = df.drop_duplicates("id")
        assert len(df) == 1945 and len(first) == 312
        assert _counts(first["status"]) == {0: 143, 1: 29, 2: 140}
        return f"status 0/1/2 = 143/29/140; visits per patient {df.groupby('id').size().max()} max"
    if name == "mgus2":
        assert len(df) == 1384 and int(df["pstat"].sum()) == 115 and int(df["death"].sum()) == 963
        return "115 PCM, 963 deaths"
    if name == "colon":
        events = df.groupby("etype")["status"].sum()
        assert len(df) == 1858 and df["id"].nunique() == 929
        assert int(events[1]) == 468 and int(events[2]) == 452
        return "468 recurrences, 452 deaths"
    if name == "cav":
        assert len(df) == 2846 and df["PTNUM"].nunique() == 622
        assert sorted(df["state"].unique()) == [1, 2, 3, 4]
        return f"states {_counts(df['state'])}"
    raise KeyError(name)


def _main() -> int:
    failed = 0
    print(f"cache: {cache_dir()}")
    for name, loader in DATASETS.items():
        try:
            df = loader()
            facts = _check(name, df)
        except RuntimeError as exc:
            failed += 1
            print(f"{name:15s} UNAVAILABLE: {exc}")
            continue
        except AssertionError:
            failed += 1
            print(f"{name:15s} CHECK FAILED against published facts")
            continue
        idc = ID_COLUMNS.get(name)
        persons = df[idc].nunique() if idc else len(df)
        shapes = ", ".join(SHAPES[name])
        print(
            f"{name:15s} {SOURCES[name]:10s} n={persons:5d} rows={len(df):6d} "
            f"[{shapes}] ok: {facts}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main())
