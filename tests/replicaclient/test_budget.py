from replicaclient.budget import RetryBudget


def test_budget_allows_about_ratio_of_calls_as_extra_requests():
    budget = RetryBudget(ratio=0.1, min_per_second=0)
    spent = 0
    for _ in range(1000):
        budget.deposit()
        if budget.try_spend(0.0):
            spent += 1
    assert spent == 100


def test_reserve_lets_a_quiet_client_hedge_and_refills_with_time():
    budget = RetryBudget(ratio=0.0, min_per_second=2)
    assert budget.try_spend(0.0) and budget.try_spend(0.0)
    assert not budget.try_spend(0.0)
    assert not budget.try_spend(0.4)
    assert budget.try_spend(0.5)  # 0.5 s x 2/s = one token


def test_tokens_are_capped():
    budget = RetryBudget(ratio=1.0, capacity=3, min_per_second=0)
    for _ in range(10):
        budget.deposit()
    assert [budget.try_spend(0) for _ in range(4)] == [True, True, True, False]
