//! The lock-class dependency graph in Graphviz DOT: what a kernel engineer would
//! rather look at than read. Classes are boxes with lockdep's usage bits (`{+.+.}`); each edge A → B
//! ("B taken while A held") is labelled with the call site that first took B; the edges
//! of every reported cycle and IRQ-inversion path are drawn in red.

use std::fmt::Write;

use super::{ClassId, Validator};

/// A DOT string literal's contents.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Validator {
    /// Marks the consecutive pairs of `path` as the edges of a reported finding.
    pub(super) fn flag_path(&mut self, path: &[ClassId]) {
        for pair in path.windows(2) {
            self.flagged.insert((pair[0], pair[1]));
        }
    }

    /// The dependency graph so far, in DOT (deterministic: classes by first use,
    /// edges by class).
    pub fn dot(&self) -> String {
        let mut out = String::from(
            "digraph lockdep {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n  \
             edge [fontname=\"monospace\", fontsize=10];\n",
        );
        for (id, class) in self.classes.iter().enumerate() {
            let usage = self.usage(id as ClassId);
            let _ = writeln!(
                out,
                "  c{id} [label=\"{}\\n{usage}\"];",
                escape(&class.name)
            );
        }
        let mut edges: Vec<_> = self.edges.iter().collect();
        edges.sort_unstable_by_key(|(&pair, _)| pair);
        for (&(a, b), edge) in edges {
            // The call site that took B (the lock function itself says little).
            let site = match edge.next.caller {
                0 => self.code(edge.next.pc, false),
                caller => self.code(caller, true),
            };
            let label = escape(&site);
            let style = if self.flagged.contains(&(a, b)) {
                ", color=red, fontcolor=red, penwidth=2"
            } else {
                ""
            };
            let _ = writeln!(out, "  c{a} -> c{b} [label=\"{label}\"{style}];");
        }
        out.push_str("}\n");
        out
    }
}
