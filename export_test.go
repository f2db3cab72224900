package webhook

// ParamNames returns the names of a compiled statement's parameters, $1
// first, for tests that script a database by parameter name.
func ParamNames(sql string) []string {
	v, _ := paramNames.Load(sql)
	names, _ := v.([]string)
	return names
}

// ReservedWords are the table names NewPostgresSupervisor refuses.
var ReservedWords = reservedWords

// BreakerFailures is the consecutive-failure count of a memory
// supervisor's breaker (0 when it has none), for the fault model's exact
// breaker check.
func BreakerFailures(s *MemorySupervisor, key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.breakers[key]; b != nil {
		return b.Failures
	}
	return 0
}

// ShortHorizon lets p's Horizon be below HorizonMin, for tests that run a
// horizon out in real time (the fault model); users cannot.
func ShortHorizon(p RetryPolicy) RetryPolicy {
	p.shortHorizon = true
	return p
}
