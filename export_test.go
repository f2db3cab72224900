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
