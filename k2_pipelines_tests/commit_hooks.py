"""Tests step in between a writer's plan and its commit (lib/iceberg/commit.commit), from outside the writer."""

from collections.abc import Callable

from pyiceberg.catalog import Catalog
from pyiceberg.table import Transaction

from k2_pipelines.lib.iceberg.commit import Committed, Plan, commit


def after_planning(action: Callable[[], object]) -> Callable[[Catalog, Plan, str], Committed | None]:
    """`commit`, except that `action` runs after each plan that has something to commit, before committing it."""

    def commit_after_action(catalog: Catalog, plan: Plan, next_step: str) -> Committed | None:
        def plan_then_act(attempt: int) -> list[Transaction] | None:
            transactions = plan(attempt)
            if transactions is not None:
                action()
            return transactions

        return commit(catalog, plan_then_act, next_step)

    return commit_after_action
