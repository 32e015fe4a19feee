# Sensitivity classification (helper): a tool's level from keywords in its name,
# description and parameter names, checked critical -> high -> medium -> low, default
# medium. Keywords live in data.sark_config.classification_keywords and match as
# case-insensitive substrings (as SARK's classifier does).
#
#   data.sark.classification.level        the level of input.tool
#   classify(tool)                        the level of any tool object
package sark.classification

kw := data.sark_config.classification_keywords

# The lower-cased texts a tool is classified by.
texts(t) := {lower(s) |
	some s in array.concat([object.get(t, "name", ""), object.get(t, "description", "")], param_names(t))
	is_string(s)
	s != ""
}

param_names(t) := [k | some k, _ in t.parameters] if is_object(t.parameters)

else := [k | some k in t.parameters; is_string(k)] if is_array(t.parameters)

else := []

matches(ts, lvl) if {
	some word in kw[lvl]
	some s in ts
	contains(s, word)
}

level_of_texts(ts) := "critical" if matches(ts, "critical")

else := "high" if matches(ts, "high")

else := "medium" if matches(ts, "medium")

else := "low" if matches(ts, "low")

else := data.sark_config.default_level

classify(t) := level_of_texts(texts(t)) if is_object(t)

else := data.sark_config.default_level

level := classify(data.sark.common.tool)
