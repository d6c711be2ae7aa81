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

    /// `text` with every known variable replaced by its text.
    pub fn expand_text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        if !out.contains("$(") {
            return out;
        }
        for (name, value) in &self.0 {
            let pattern = format!("$({name})");
            if out.contains(&pattern) {
                out = out.replace(&pattern, &Self::text_of(value));
            }
        }
        out
    }

    /// Replaces variables in every string value of `value`, recursively.
    pub fn substitute(&self, value: &mut Value) {
        match value {
            Value::String(text) if text.contains("$(") => *value = self.expand(text),
            Value::Array(items) => items.iter_mut().for_each(|v| self.substitute(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.substitute(v)),
            _ => {}
        }
    }
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
    fn unknown_variables_under_reserved_prefixes_are_reported() {
        let value = json!({ "a": "$(service.nmae) $(HOME) $(parameters.port)", "b": ["$(parameters.chain)"] });
        let unknown = unknown_variables(&value, &["service.", "parameters."], &variables());
        assert_eq!(unknown, vec!["$(parameters.chain)", "$(service.nmae)"]);
    }
}
