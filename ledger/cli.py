"""`medswarm ledger ...`: the auditor's and admin's commands (filled in by the ledger issue)."""

import typer

app = typer.Typer(help="Consortium ledger: deploy, register, fund, status, audit, withdraw.")
