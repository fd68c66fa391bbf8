"""The token bucket (GCRA) arithmetic and its RateLimit headers: pure logic, a fake clock."""

from notes_api.ratelimit import Limit, LocalBuckets

READS = Limit("reads", per_second=10.0, burst=3)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_allows_a_burst_then_denies_until_a_token_is_back() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock=clock)
    decisions = [buckets.take("k", READS) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    denied = decisions[-1]
    assert 0 < denied.retry_after <= 0.1  # one token every 100 ms
    clock.now += denied.retry_after
    assert buckets.take("k", READS).allowed
    assert not buckets.take("k", READS).allowed


def test_buckets_are_per_key_and_refill_to_the_burst_only() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock=clock)
    for _ in range(3):
        buckets.take("a", READS)
    assert buckets.take("b", READS).remaining == 2
    clock.now += 3600
    assert buckets.take("a", READS).remaining == 2  # a long pause never saves up more than burst


def test_headers_follow_the_ietf_draft_structured_field_form() -> None:
    buckets = LocalBuckets(clock=Clock())
    allowed = buckets.take("k", READS)
    assert allowed.headers() == [
        (b"ratelimit-policy", b'"reads";q=3;w=1'),
        (b"ratelimit", b'"reads";r=2;t=1'),
    ]
    for _ in range(3):
        denied = buckets.take("k", READS)
    assert (b"retry-after", b"1") in denied.headers()
    slow = Limit("bulk", per_second=0.1, burst=5)
    assert slow.policy() == '"bulk";q=5;w=50'


def test_the_local_fallback_forgets_idle_buckets_so_it_stays_small() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock=clock, max_keys=10)
    for i in range(10):
        buckets.take(f"k{i}", READS)
    clock.now += 1  # every bucket is full again: nothing to remember
    buckets.take("new", READS)
    assert len(buckets) == 1
