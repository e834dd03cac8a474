//! Time grids for the samplers (SPEC §5), one concept per file, none importing another's
//! caller:
//!
//! | file | what |
//! |---|---|
//! | `timesteps.rs` | which training timesteps: diffusers' spacings, numpy rounding, DPM-Solver's variant |
//! | `discrete.rs` | grids of discrete training levels (DDPM, DDIM, DDIM inversion) |
//! | `sigma.rs` | sigma-space and DPM-Solver grids: interpolated, Karras / exponential / beta sigmas, the finite zero-SNR table, final sigmas, the network's time input |
//!
//! `discrete.rs` and `sigma.rs` build on `timesteps.rs` only; everything is re-exported here.

mod discrete;
mod sigma;
mod timesteps;

pub use discrete::*;
pub use sigma::*;
pub use timesteps::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleConfig;

    #[test]
    fn trailing_spacing_has_exactly_n_steps() {
        for n in [1usize, 10, 16, 61, 103, 121, 999, 1000] {
            let t = discrete_timesteps(Spacing::Trailing, 1000, n, 0);
            assert_eq!(t.len(), n, "n = {n}");
            assert_eq!(t[0], 999);
            assert_eq!(
                *t.last().unwrap(),
                round_half_even(1000.0 / n as f64) as usize - 1
            );
        }
    }

    #[test]
    fn spacings_match_their_definitions() {
        assert_eq!(
            discrete_timesteps(Spacing::Leading, 1000, 10, 0),
            vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
        );
        assert_eq!(discrete_timesteps(Spacing::Leading, 1000, 10, 1)[0], 901);
        assert_eq!(
            discrete_timesteps(Spacing::Trailing, 1000, 10, 0),
            vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
        );
        assert_eq!(
            discrete_timesteps(Spacing::Linspace, 1000, 4, 0),
            vec![999, 666, 333, 0]
        );
        assert_eq!(round_half_even(812.5), 812.0);
        assert_eq!(round_half_even(813.5), 814.0);
        assert_eq!(round_half_even(-0.5), 0.0);
    }

    #[test]
    fn dpm_solver_and_inversion_grids() {
        // diffusers: linspace(0, 999, 11).round()[::-1][:-1] (499.5 rounds to 500).
        assert_eq!(
            dpm_solver_timesteps(Spacing::Linspace, 1000, 10, 0),
            vec![999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
        );
        assert_eq!(
            dpm_solver_timesteps(Spacing::Leading, 1000, 4, 1),
            vec![801, 601, 401, 201]
        );
        let s = ScheduleConfig::default().build().unwrap();
        // Inversion: level k carries the noise of the state before step k and the target's t.
        let g = ddim_inversion_grid(&s, &[900, 500, 100], 1.0);
        assert_eq!(g.len(), 4);
        assert_eq!((g[0].sigma, g[0].t), (0.0, 100.0));
        assert_eq!((g[1].sigma, g[1].t), (s.sigma[100], 500.0));
        assert_eq!((g[2].sigma, g[2].t), (s.sigma[500], 900.0));
        assert_eq!(g[3].sigma, s.sigma[900]);
        // Zero terminal SNR: the sigma-space table is made finite as diffusers does.
        let z = ScheduleConfig {
            rescale_zero_terminal_snr: true,
            ..ScheduleConfig::default()
        }
        .build()
        .unwrap();
        let f = finite_sigma_schedule(&z);
        let want = ((1.0 - ZERO_SNR_ALPHA_BAR) / ZERO_SNR_ALPHA_BAR).sqrt();
        // 1e-12 relative: alpha_bar_T is rebuilt as alpha_bar_{T-1} (1 - beta_T), a few ulps.
        assert!(z.sigma[999].is_infinite() && (f.sigma[999] / want - 1.0).abs() < 1e-12);
        assert_eq!(f.sigma[..999], z.sigma[..999]);
        // The Karras grid starts there (up to the rounding of (s^(1/7))^7: 1e-12 relative).
        let g = sigma_space_grid(&z, Spacing::Trailing, 10, 0, true);
        assert!((g[0].sigma / want - 1.0).abs() < 1e-12);
    }

    #[test]
    fn finite_sigma_schedule_keeps_every_table_consistent() {
        // Issue 12: the patch used to set alpha_bar and sigma only, leaving sqrt_alpha_bar, SNR
        // and the posterior tables of the last step stale (SNR 0, posterior variance of a beta
        // of 1). Every table must follow from its own alpha_bar (SPEC §1-2). Tolerance 1e-12
        // relative (1e-12 absolute near 0): each table is a few float64 operations on alpha_bar.
        let z = ScheduleConfig {
            rescale_zero_terminal_snr: true,
            ..ScheduleConfig::default()
        }
        .build()
        .unwrap();
        let f = finite_sigma_schedule(&z);
        let close = |what: &str, i: usize, got: f64, want: f64| {
            let err = (got - want).abs() / want.abs().max(1e-300);
            assert!(
                err < 1e-12 || (got - want).abs() < 1e-12,
                "{what}[{i}]: {got} vs {want}"
            );
        };
        assert!((f.alpha_bar[999] / ZERO_SNR_ALPHA_BAR - 1.0).abs() < 1e-12);
        for i in 0..f.len() {
            let ab = f.alpha_bar[i];
            let prev = f.alpha_bar_prev(i);
            close("alpha", i, f.alpha[i], ab / prev);
            close("beta", i, f.beta[i], 1.0 - ab / prev);
            close("sqrt_alpha_bar", i, f.sqrt_alpha_bar[i], ab.sqrt());
            close(
                "sqrt_one_minus",
                i,
                f.sqrt_one_minus_alpha_bar[i],
                (1.0 - ab).sqrt(),
            );
            close(
                "log_one_minus",
                i,
                f.log_one_minus_alpha_bar[i],
                (1.0 - ab).ln(),
            );
            close("sigma", i, f.sigma[i], ((1.0 - ab) / ab).sqrt());
            close("snr", i, f.snr[i], ab / (1.0 - ab));
            close("log_snr", i, f.log_snr[i], (ab / (1.0 - ab)).ln());
            let beta = 1.0 - ab / prev;
            close(
                "posterior_variance",
                i,
                f.posterior_variance[i],
                (1.0 - prev) / (1.0 - ab) * beta,
            );
            close(
                "coef_x0",
                i,
                f.posterior_mean_coef_x0[i],
                prev.sqrt() * beta / (1.0 - ab),
            );
            let coef_xt = (ab / prev).sqrt() * (1.0 - prev) / (1.0 - ab);
            close("coef_xt", i, f.posterior_mean_coef_xt[i], coef_xt);
        }
    }

    #[test]
    fn grids_end_clean_and_decrease() {
        let s = ScheduleConfig::default().build().unwrap();
        for g in [
            full_grid(&s),
            interpolated_sigma_grid(&s, &timesteps(Spacing::Linspace, 1000, 25, 0)),
            karras_grid(&s, s.sigma[0], s.sigma[999], 25, 7.0, false),
        ] {
            assert_eq!(g.last().unwrap().sigma, 0.0);
            assert!(g.windows(2).all(|w| w[1].sigma < w[0].sigma));
        }
    }
}
