"""A database bootstrapped with older books gets the current ones in place, its data kept."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from starters.local import tryton_bootstrap as bootstrap
from tests.fixtures.tryton import ERP_PASSWORD, ERP_USER, TEMPLATE_DATABASE, TrytonTemplate


def test_older_books_are_brought_up_to_date_without_rebuilding_the_database(
    tryton_template: TrytonTemplate, tmp_path: Path
) -> None:
    bootstrap.copy_template(tryton_template.sqlite, tmp_path, TEMPLATE_DATABASE)
    db = bootstrap.sqlite_path(tmp_path, TEMPLATE_DATABASE)
    marker = tmp_path / f"{TEMPLATE_DATABASE}{bootstrap.MARKER_SUFFIX}"
    marker.write_text(json.dumps({"trytond": bootstrap.trytond_version()}))  # books 1
    with sqlite3.connect(db) as connection:
        # What older books lacked, and a party that stands for the data to keep.
        connection.execute("DELETE FROM account_tax WHERE name = 'UK VAT 20%'")
        connection.execute("UPDATE party_party SET name = 'kept' WHERE id = 1")
    connection.close()
    assert not bootstrap.is_bootstrapped(tmp_path, TEMPLATE_DATABASE)

    bootstrap.bootstrap_database(tmp_path, TEMPLATE_DATABASE, "unused", ERP_USER, ERP_PASSWORD)

    assert bootstrap.is_bootstrapped(tmp_path, TEMPLATE_DATABASE)
    assert json.loads(marker.read_text())["books"] == bootstrap.BOOKS_VERSION
    with sqlite3.connect(db) as connection:
        taxes = {row[0] for row in connection.execute("SELECT name FROM account_tax")}
        (kept,) = connection.execute("SELECT name FROM party_party WHERE id = 1").fetchone()
    connection.close()
    assert set(bootstrap.TAXES) <= taxes
    assert kept == "kept"
