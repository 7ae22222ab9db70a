"""Teaching in workshops: app mode (Voilà), results packs, timed-probe estimates.

* :mod:`workbench.app.server`: the study notebooks as Voilà dashboards on 127.0.0.1 (``workbench app``).
* :mod:`workbench.app.studies`: the list of study notebooks for the landing page.
* :mod:`workbench.app.pack`: results packs (``workbench pack build|load``).
* :mod:`workbench.app.estimate`: durations from short timed probes (the panels' "Heavier" labels).
* :mod:`workbench.app.tour`: what the guided tour (``notebooks/10_guided_tour.ipynb``) runs and shows.

Submodules are imported on use (the panels import :mod:`~workbench.app.estimate`, which must stay light).
"""
