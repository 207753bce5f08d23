//! Which rules' `on` patterns match a dispatch key, found once per key:
//! the dispatcher matches every event against every rule, and a glob set
//! match normalises its candidate each time (for the default rules, seven
//! of them an event). Part of matching ([`super::Ruleset::matching`]); the
//! rest of a rule's conditions (`[rule.match]`) are checked per event.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::Rule;

/// Dispatch keys seen, each with the rules (by index) whose `on` patterns
/// match it. Keys come from a fixed table, save an engine's unknown types
/// and actions: past [`OnKeys::MAX`] keys they are matched each time.
#[derive(Default)]
pub struct OnKeys(RwLock<HashMap<Box<str>, Arc<[usize]>, foldhash::fast::RandomState>>);

impl OnKeys {
    const MAX: usize = 4096;

    /// The indices of `rules` whose `on` patterns match `key`, in order.
    /// `rules` must be the same every call: the ruleset's own.
    pub(super) fn rules_for(&self, key: &str, rules: &[Arc<Rule>]) -> Arc<[usize]> {
        if let Some(on) = self.0.read().ok().and_then(|k| k.get(key).cloned()) {
            return on;
        }
        let on: Arc<[usize]> = (0..rules.len())
            .filter(|&i| rules[i].on.is_match(key))
            .collect();
        if let Ok(mut keys) = self.0.write()
            && keys.len() < Self::MAX
        {
            keys.insert(key.into(), on.clone());
        }
        on
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.read().map(|k| k.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use crate::event::Event;
    use crate::handlers::Registry;
    use crate::rules::Config;

    fn names(config: &Config, ev: &Event) -> Vec<String> {
        config
            .rules
            .matching(ev)
            .map(|r| r.name.to_string())
            .collect()
    }

    #[test]
    fn matching_by_remembered_keys_is_matching_every_rule() {
        let src = r#"
[[rule]]
name = "all"
on = ["*"]
handler = "log"
[[rule]]
name = "crashes"
on = ["container.die", "container.oom"]
handler = "log"
[rule.match]
exit_code = "nonzero"
[[rule]]
name = "execs"
on = ["container.exec_*"]
handler = "log"
[[rule]]
name = "networks"
on = ["network.*", "dockwarden.*"]
handler = "log"
"#;
        let c = Config::load_str("t.toml", src, &Registry::builtin()).expect("valid rules");
        let coded = |typ: &str, action: &str, code: i64| {
            Event::decode(format!(
                r#"{{"Type":"{typ}","Action":"{action}","Actor":{{"ID":"x","Attributes":{{"exitCode":"{code}"}}}},"timeNano":1}}"#
            ).as_bytes())
            .expect("test event decodes")
        };
        let typed = |typ: &str, action: &str| coded(typ, action, 1);
        let events = [
            typed("container", "die"),
            typed("container", "exec_start: sh -c id"),
            typed("container", "exec_die"),
            typed("network", "connect"),
            typed("volume", "mount"),
            typed("future", "thing"),
            typed("container", "oom"),
            coded("container", "die", 0),
        ];
        // Twice: the first time finds each key, the second remembers it.
        for _ in 0..2 {
            for ev in &events {
                let every: Vec<String> = c
                    .rules
                    .rules
                    .iter()
                    .filter(|r| r.matches(ev))
                    .map(|r| r.name.to_string())
                    .collect();
                assert_eq!(names(&c, ev), every, "{}", ev.key);
            }
        }
        assert_eq!(
            names(&c, &typed("container", "exec_start: sh")),
            ["all", "execs"]
        );
        assert_eq!(names(&c, &typed("container", "die")), ["all", "crashes"]);
        assert_eq!(
            names(&c, &coded("container", "die", 0)),
            ["all"],
            "exit 0 is no crash"
        );
        assert_eq!(c.rules.on_keys.len(), 7, "one entry a key");
    }
}
