//! A model's parameters as one flat float32 vector, and the bridge to and from burn modules.
//!
//! The trainer keeps every model's weights, AdamW moments and EMA as flat vectors (one
//! optimiser, one EMA, one clipping rule and one checkpoint format for every model, SPEC §4).
//! A burn module is a view of such a vector: [`module_slots`] lists its float parameters in the
//! module's visiting order (struct field order, so deterministic) with their paths
//! (`down_blocks.0.resnets.0.conv1.weight`: the diffusers names, since our field names are
//! diffusers' paths); [`load_values`] writes a vector into a module of that shape, and
//! [`module_gradients`] reads the gradients of a backward pass back into the same layout.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor, TensorData};

/// One named tensor inside a flat parameter vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSlot {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl TensorSlot {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a zero-sized tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot's range in the flat vector.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Parameters as a flat vector with their names and shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatParams {
    pub slots: Vec<TensorSlot>,
    pub values: Vec<f32>,
}

impl FlatParams {
    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `(name, shape, values)` of every tensor.
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        self.slots
            .iter()
            .map(|s| (s.name.clone(), s.shape.clone(), &self.values[s.range()]))
            .collect()
    }
}

/// Slots laid end to end from `(name, shape)` pairs.
pub fn contiguous_slots(named: impl IntoIterator<Item = (String, Vec<usize>)>) -> Vec<TensorSlot> {
    let mut offset = 0;
    named
        .into_iter()
        .map(|(name, shape)| {
            let slot = TensorSlot {
                name,
                shape,
                offset,
            };
            offset += slot.len();
            slot
        })
        .collect()
}

/// Total length of contiguous slots.
pub fn slots_len(slots: &[TensorSlot]) -> usize {
    slots.last().map_or(0, |s| s.offset + s.len())
}

struct PathTracker {
    path: Vec<String>,
}

impl PathTracker {
    fn enter(&mut self, name: &str) {
        self.path.push(name.to_string());
    }
    fn exit(&mut self) {
        self.path.pop();
    }
}

struct SlotCollector {
    tracker: PathTracker,
    named: Vec<(String, Vec<usize>)>,
    values: Option<Vec<f32>>,
}

impl ModuleVisitor for SlotCollector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.tracker.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        self.named
            .push((self.tracker.path.join("."), tensor.dims().to_vec()));
        if let Some(values) = &mut self.values {
            values.extend(
                tensor
                    .to_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("float parameter"),
            );
        }
    }
}

fn collect<M: Module>(module: &M, with_values: bool) -> (Vec<TensorSlot>, Option<Vec<f32>>) {
    let mut c = SlotCollector {
        tracker: PathTracker { path: Vec::new() },
        named: Vec::new(),
        values: with_values.then(Vec::new),
    };
    module.visit(&mut c);
    (contiguous_slots(c.named), c.values)
}

/// The module's float parameters in visiting order, with their paths.
pub fn module_slots<M: Module>(module: &M) -> Vec<TensorSlot> {
    collect(module, false).0
}

/// The module's parameters as a flat vector (float32).
pub fn module_params<M: Module>(module: &M) -> FlatParams {
    let (slots, values) = collect(module, true);
    FlatParams {
        slots,
        values: values.unwrap_or_default(),
    }
}

struct ValueLoader<'a> {
    values: &'a [f32],
    offset: usize,
    require_grad: bool,
}

impl ModuleMapper for ValueLoader<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let end = (self.offset + n).min(self.values.len());
        let data = TensorData::new(self.values[self.offset..end].to_vec(), shape);
        self.offset += n;
        let mut t = Tensor::from_data(data, (&tensor.device(), tensor.dtype()));
        if self.require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

/// Writes `values` (the layout of [`module_slots`]) into `module`'s parameters, keeping each
/// parameter's device and dtype. On an autodiff device the new tensors are leaves that
/// require gradients. Errors if the length does not match.
pub fn load_values<M: Module>(module: M, values: &[f32]) -> crate::Result<M> {
    let expected = slots_len(&module_slots(&module));
    if values.len() != expected {
        return Err(crate::Error::Shape(format!(
            "{} parameter values for a model that has {expected}",
            values.len()
        )));
    }
    let require_grad = module.devices().first().is_some_and(|d| d.is_autodiff());
    let mut loader = ValueLoader {
        values,
        offset: 0,
        require_grad,
    };
    Ok(module.map(&mut loader))
}

struct GradCollector<'a> {
    grads: &'a Gradients,
    out: Vec<f32>,
}

impl ModuleVisitor for GradCollector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        match t.grad(self.grads) {
            Some(g) => self.out.extend(
                g.to_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("float gradient"),
            ),
            // A parameter the loss does not depend on (e.g. an unused class row) has gradient 0.
            None => self.out.extend(std::iter::repeat_n(0.0, n)),
        }
    }
}

/// The gradients of `module`'s parameters from a backward pass, in the layout of
/// [`module_slots`].
pub fn module_gradients<M: Module>(module: &M, grads: &Gradients) -> Vec<f32> {
    let mut c = GradCollector {
        grads,
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::Device;

    #[derive(Module, Debug)]
    struct Two {
        first: burn::nn::Linear,
        layers: Vec<burn::nn::Linear>,
    }

    fn two(device: &Device) -> Two {
        Two {
            first: LinearConfig::new(3, 4).init(device),
            layers: vec![LinearConfig::new(4, 2).init(device)],
        }
    }

    #[test]
    fn slots_follow_field_order_with_paths() {
        let m = two(&crate::device::cpu());
        let slots = module_slots(&m);
        let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "first.weight",
                "first.bias",
                "layers.0.weight",
                "layers.0.bias"
            ]
        );
        assert_eq!(slots[0].shape, [3, 4]);
        assert_eq!(slots_len(&slots), 12 + 4 + 8 + 2);
    }

    #[test]
    fn load_then_read_is_exact_and_length_is_checked() {
        let m = two(&crate::device::cpu());
        let values: Vec<f32> = (0..26).map(|i| i as f32 * 0.25 - 3.0).collect();
        let m = load_values(m, &values).unwrap();
        assert_eq!(module_params(&m).values, values);
        assert!(load_values(m, &values[..25]).is_err());
    }

    #[test]
    fn gradients_come_back_in_slot_order() {
        // loss = sum(first(x)) with x = ones: d/dW[i][j] = 1 for every entry, d/db = 1;
        // the second layer is unused, so its gradient is 0. Exact in float32.
        let device = crate::device::cpu().autodiff();
        let m = load_values(two(&device), &[0.5; 26]).unwrap();
        let x = Tensor::<2>::ones([1, 3], &device);
        let grads = m.first.forward(x).sum().backward();
        let g = module_gradients(&m, &grads);
        assert_eq!(g.len(), 26);
        assert!(g[..16].iter().all(|&v| v == 1.0));
        assert!(g[16..].iter().all(|&v| v == 0.0));
    }
}
