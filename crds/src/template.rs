//! The `$(...)` variables of profiles' manifests: `$(runtime.name)` in a SupportServiceProfile,
//! `$(service.name)` and `$(parameters.port)` in a ServiceProfile. Replacement happens in
//! string values only, never in keys or in the structure, so a value (a tenant's parameter)
//! can change what a field says but not which fields exist.
//!
//! A string that is exactly one variable takes the variable's JSON value, so
//! `replicas: "$(parameters.replicas)"` becomes the number `3`; a variable inside a longer
//! string is replaced by its text (`"--port=$(parameters.port)"` → `"--port=8545"`). A `$(`
//! not followed by a known variable is left as written (shell snippets in manifests keep
//! working); [`unknown_variables`] finds those under the reserved prefixes.

use std::collections::BTreeMap;

use serde_json::Value;

/// The prefix of the variables a tenant supplies (a WorkloadServiceDependency's parameters):
/// they may fill values, never name what QleetOS reads with its own identity.
pub const TENANT_VARIABLE_PREFIX: &str = "parameters.";

/// Variable name (without `$(` `)`) → value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Variables(pub BTreeMap<String, Value>);

impl Variables {
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.0.insert(name.into(), value.into());
    }

    fn text_of(value: &Value) -> String {
        match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }

    /// `text` with every known variable replaced; a string that is exactly one variable
    /// becomes that variable's value.
    pub fn expand(&self, text: &str) -> Value {
        if let Some(name) = text.strip_prefix("$(").and_then(|t| t.strip_suffix(')'))
            && let Some(value) = self.0.get(name)
        {
            return value.clone();
        }
        Value::String(self.expand_text(text))
    }

    /// `text` with every known variable replaced by its text, in one left-to-right pass:
    /// replaced text is never scanned again, so a value (a tenant's parameter) that reads
    /// `$(runtime.name)` stays literal; unknown `$(...)` stay as written.
    pub fn expand_text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("$(") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let known = after
                .find(')')
                .and_then(|end| Some((self.0.get(&after[..end])?, end)));
            match known {
                Some((value, end)) => {
                    out.push_str(&Self::text_of(value));
                    rest = &after[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// A copy without the variables whose name starts with `prefix`, e.g. `parameters.`:
    /// what expands in fields a tenant's values must not choose.
    pub fn without_prefix(&self, prefix: &str) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(name, _)| !name.starts_with(prefix))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        )
    }

    /// Replaces variables in every string value of `value`, recursively.
    /// [`Self::substitute`] over every value of `map` (a chart's values), keys untouched.
    pub fn substitute_values(&self, map: &mut serde_json::Map<String, Value>) {
        map.values_mut().for_each(|v| self.substitute(v));
    }

    pub fn substitute(&self, value: &mut Value) {
        match value {
            Value::String(text) if text.contains("$(") => *value = self.expand(text),
            Value::Array(items) => items.iter_mut().for_each(|v| self.substitute(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.substitute(v)),
            _ => {}
        }
    }
}

/// The names of the `$(name)` in `text` (each `$(` up to the next `)`, nested ones included),
/// e.g. to find where a profile uses a tenant's parameter.
pub fn variable_names(text: &str) -> Vec<&str> {
    text.match_indices("$(")
        .filter_map(|(start, _)| {
            let after = &text[start + 2..];
            after.find(')').map(|end| &after[..end])
        })
        .collect()
}

/// Every `$(<prefix>...)` in the string values of `value` naming a variable `known` lacks, for
/// each reserved prefix (e.g. `service.`, `parameters.`): a profile's typo is reported, not
/// shipped.
pub fn unknown_variables(value: &Value, prefixes: &[&str], known: &Variables) -> Vec<String> {
    let mut unknown = Vec::new();
    collect_unknown(value, prefixes, known, &mut unknown);
    unknown.sort();
    unknown.dedup();
    unknown
}

fn collect_unknown(value: &Value, prefixes: &[&str], known: &Variables, out: &mut Vec<String>) {
    match value {
        Value::String(text) => {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("$(") {
                let after = &rest[start + 2..];
                let Some(end) = after.find(')') else { break };
                let name = &after[..end];
                if prefixes.iter().any(|p| name.starts_with(p)) && !known.0.contains_key(name) {
                    out.push(format!("$({name})"));
                }
                rest = &after[end + 1..];
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| collect_unknown(v, prefixes, known, out)),
        Value::Object(map) => map
            .values()
            .for_each(|v| collect_unknown(v, prefixes, known, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn variables() -> Variables {
        let mut vars = Variables::default();
        vars.insert("service.name", "rpc-1");
        vars.insert("parameters.replicas", 3);
        vars.insert("parameters.port", 8545);
        vars
    }

    #[test]
    fn a_whole_string_variable_keeps_its_type_and_an_embedded_one_becomes_text() {
        let mut value = json!({
            "replicas": "$(parameters.replicas)",
            "args": ["--port=$(parameters.port)", "$(service.name)"],
            "script": "echo $(HOME) $(service.name)",
        });
        variables().substitute(&mut value);
        assert_eq!(value["replicas"], 3);
        assert_eq!(value["args"][0], "--port=8545");
        assert_eq!(value["args"][1], "rpc-1");
        assert_eq!(value["script"], "echo $(HOME) rpc-1");
    }

    #[test]
    fn keys_are_never_replaced() {
        let mut value = json!({ "$(service.name)": "x" });
        variables().substitute(&mut value);
        assert!(value.get("$(service.name)").is_some());
    }

    #[test]
    fn a_value_naming_a_variable_is_kept_literally() {
        let mut vars = variables();
        vars.insert("runtime.name", "lab-1");
        vars.insert("parameters.other", "secret-of-another");
        vars.insert("parameters.evil", "$(runtime.name)");
        vars.insert("parameters.chained", "$(parameters.other)");
        assert_eq!(
            vars.expand_text("x-$(parameters.evil)"),
            "x-$(runtime.name)"
        );
        assert_eq!(vars.expand("$(parameters.evil)"), "$(runtime.name)");
        assert_eq!(
            vars.expand_text("$(parameters.chained)/$(runtime.name)"),
            "$(parameters.other)/lab-1"
        );
    }

    #[test]
    fn text_around_multiple_and_unknown_variables_is_kept() {
        let vars = variables();
        assert_eq!(
            vars.expand_text("a $(service.name):$(parameters.port)$(service.name) b"),
            "a rpc-1:8545rpc-1 b"
        );
        assert_eq!(
            vars.expand_text("$(HOME)/$(service.name) $(parameters.nope)"),
            "$(HOME)/rpc-1 $(parameters.nope)"
        );
        assert_eq!(vars.expand_text("no variables"), "no variables");
        assert_eq!(vars.expand_text(""), "");
    }

    #[test]
    fn an_unclosed_variable_stays_as_written() {
        let vars = variables();
        assert_eq!(vars.expand_text("$(service.name) $("), "rpc-1 $(");
        assert_eq!(vars.expand_text("x $(service.name"), "x $(service.name");
        assert_eq!(vars.expand_text("$($(service.name)"), "$(rpc-1");
        assert_eq!(vars.expand("$(service.name"), "$(service.name");
    }

    #[test]
    fn variable_names_finds_every_name_even_nested() {
        assert_eq!(
            variable_names("a-$(parameters.x)-$(service.name) $("),
            vec!["parameters.x", "service.name"]
        );
        assert_eq!(
            variable_names("$($(parameters.x)"),
            vec!["$(parameters.x", "parameters.x"]
        );
    }

    #[test]
    fn without_prefix_drops_only_those_variables() {
        let vars = variables().without_prefix("parameters.");
        assert_eq!(vars.0.keys().collect::<Vec<_>>(), vec!["service.name"]);
        assert_eq!(
            vars.expand_text("$(service.name)-$(parameters.port)"),
            "rpc-1-$(parameters.port)"
        );
    }

    #[test]
    fn unknown_variables_under_reserved_prefixes_are_reported() {
        let value = json!({ "a": "$(service.nmae) $(HOME) $(parameters.port)", "b": ["$(parameters.chain)"] });
        let unknown = unknown_variables(&value, &["service.", "parameters."], &variables());
        assert_eq!(unknown, vec!["$(parameters.chain)", "$(service.nmae)"]);
    }
}
