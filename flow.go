package webhook

// Flow control: a limit on the attempts in flight to one endpoint (breaker
// key), so that one slow or hanging buyer cannot take every worker.

// NoEndpointLimit, as EndpointConcurrency in [MemoryConfig] or
// [PostgresConfig], lets one endpoint's deliveries take every worker.
const NoEndpointLimit = -1

// endpointLimit resolves an EndpointConcurrency setting of config field
// name for a pool of concurrency workers: 0 is half of them (at least
// one), NoEndpointLimit is 0 (none).
func endpointLimit(name string, v, concurrency int) (int, error) {
	switch {
	case v == NoEndpointLimit:
		return 0, nil
	case v < 0:
		return 0, badConfig(name, "is %d; use 1 or more, 0 for half of Concurrency (%d), or NoEndpointLimit", v, max(concurrency/2, 1))
	case v == 0:
		return max(concurrency/2, 1), nil
	}
	return v, nil
}
