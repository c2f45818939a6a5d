//! Kernel module dependency resolution from `modules.dep`, so the guest image
//! can load exactly the modules it needs, in order, with busybox `insmod`.

use std::collections::{HashMap, HashSet};

/// Module names compare with '-' and '_' as equal, as the kernel does.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path such as `kernel/fs/xfs/xfs.ko.xz`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalise(stem)
}

/// Parsed `modules.dep`: module name -> (its path, paths of its dependencies).
#[derive(Debug, Default)]
pub struct ModulesDep {
    entries: HashMap<String, (String, Vec<String>)>,
}

/// Why a module cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmodError {
    #[error("module {0} is neither in modules.dep nor built into the kernel")]
    Unknown(String),
}

impl ModulesDep {
    pub fn parse(text: &str) -> Self {
        let mut entries = HashMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(str::to_string).collect();
            entries.insert(module_name(path), (path.trim().to_string(), deps));
        }
        ModulesDep { entries }
    }

    /// Paths to load, dependencies first, each once, for all `wanted`
    /// modules; those in `builtin` (names from modules.builtin) are skipped.
    pub fn load_order(
        &self,
        wanted: &[&str],
        builtin: &HashSet<String>,
    ) -> Result<Vec<String>, KmodError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for w in wanted {
            let name = normalise(w);
            if builtin.contains(&name) {
                continue;
            }
            let (path, _) = self
                .entries
                .get(&name)
                .ok_or_else(|| KmodError::Unknown(w.to_string()))?;
            self.visit(path, &mut seen, &mut order);
        }
        Ok(order)
    }

    fn visit(&self, path: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) {
        if !seen.insert(path.to_string()) {
            return;
        }
        if let Some((_, deps)) = self.entries.get(&module_name(path)) {
            // modules.dep lists the full transitive closure, but in an order
            // that is not guaranteed to be load order: recurse to be sure.
            for d in deps {
                self.visit(d, seen, order);
            }
        }
        order.push(path.to_string());
    }
}

/// Names from `modules.builtin` (one path per line).
pub fn parse_builtin(text: &str) -> HashSet<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/xfs/xfs.ko.xz:
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
";

    #[test]
    fn dependencies_come_first_once() {
        let d = ModulesDep::parse(DEP);
        let o = d
            .load_order(&["virtio-net", "xfs"], &HashSet::new())
            .unwrap();
        assert_eq!(
            o,
            [
                "kernel/net/core/failover.ko.xz",
                "kernel/drivers/net/net_failover.ko.xz",
                "kernel/drivers/net/virtio_net.ko.xz",
                "kernel/fs/xfs/xfs.ko.xz"
            ]
        );
    }

    #[test]
    fn builtin_modules_are_skipped() {
        let d = ModulesDep::parse(DEP);
        let b = parse_builtin("kernel/fs/xfs/xfs.ko\n");
        assert_eq!(d.load_order(&["xfs"], &b).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn unknown_module_is_an_error() {
        let d = ModulesDep::parse(DEP);
        assert_eq!(
            d.load_order(&["ext5"], &HashSet::new()),
            Err(KmodError::Unknown("ext5".into()))
        );
    }
}
