# Sensitivity classification (helper): a tool's level from keywords in its name,
# description and parameter names, checked critical -> high -> medium -> low, default
# medium. Keywords live in data.sark_config.classification_keywords (per level, an
# object whose keys are the keywords and whose values are "") and match as
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

# The texts as one string, one per line (no keyword contains a newline).
text_of(t) := concat("\n", texts(t))

# Whether a keyword of the level occurs in the text. One builtin call instead of a loop
# over the keywords: strings.replace_n deletes every keyword (they map to ""), so the
# text changes exactly when one occurs (REGORUS-GAPS.md, "Speed").
matches(text, lvl) if strings.replace_n(kw[lvl], text) != text

level_of_text(text) := "critical" if matches(text, "critical")

else := "high" if matches(text, "high")

else := "medium" if matches(text, "medium")

else := "low" if matches(text, "low")

else := data.sark_config.default_level

classify(t) := level_of_text(text_of(t)) if is_object(t)

else := data.sark_config.default_level

level := level_of_text(text_of(data.sark.common.tool))
