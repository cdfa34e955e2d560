"""Quality control of plate folders: Great Expectations suites over metadata, provenance and files.

- :mod:`~assets_pkg.core.qc.validate`: :func:`validate_plate`, the entry point.
- :mod:`~assets_pkg.core.qc.rules`: the rules of the four suites, one expectation each.
- :mod:`~assets_pkg.core.qc.tables`: the pandas tables a plate becomes for the suites.
- :mod:`~assets_pkg.core.qc.suites`: the GX context and suites, and GX results -> failures.
- :mod:`~assets_pkg.core.qc.report`: the report naming each offending file and field.
- :mod:`~assets_pkg.core.qc.instruments`: the instrument registry.
"""
