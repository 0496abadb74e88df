#!/usr/bin/env Rscript
# Reference outputs of Bioconductor sva::ComBat for imharmony's ComBat parity tests.
#
# Reads every case listed in fixtures/cases.json (written by make_data.py), runs sva::ComBat on it
# (genes x samples, i.e. the transpose of data.csv) with
#   mod = model.matrix(~ <covariates>, data = samples)   (categorical covariates as factors,
#                                                         levels sorted)
# and writes fixtures/<case>/expected.csv (samples x features, "%.17g", NA kept as NA).
# Cases with "eb": false are computed with combat_no_eb() below, because sva has no such switch.
#
# Everything written is checked here as well:
#   * the CSV text read back gives exactly the doubles that were written (both directions);
#   * the output is finite exactly where the input is, differs from the input everywhere it should
#     (all but reference-batch samples and features R leaves unadjusted), and equals the input
#     where it should;
#   * an independent implementation written in this file (standardization, empirical Bayes steps
#     and adjustment, from the published method) reproduces sva's output for every EB case, which
#     validates the standardization and adjustment that combat_no_eb() shares;
#   * the non-parametric likelihoods that sva evaluates in linear space stay far from underflow;
#   * combat_no_eb() output has, in every batch, standardized mean 0 and variance 1 (or the
#     original spread when mean-only), and sva's mean-only result tends to it as the prior on the
#     batch means flattens.
# A summary of these checks is written to fixtures/checks.txt; the script stops on any failure.
#
# Run: Rscript make_fixtures.R   (after: python make_data.py)

suppressPackageStartupMessages({
  library(sva)
  library(jsonlite)
})

script_dir <- function() {
  args <- commandArgs(trailingOnly = FALSE)
  file <- sub("^--file=", "", args[grep("^--file=", args)])
  if (length(file) == 1) dirname(normalizePath(file)) else getwd()
}
FIXTURES <- file.path(script_dir(), "fixtures")

fmt17 <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))

sorted_levels <- function(x) sort(unique(x), method = "radix")  # C-locale order

# ---------------------------------------------------------------------------------------------
# Reading and writing
# ---------------------------------------------------------------------------------------------

read_numeric_csv <- function(path) {
  df <- read.csv(path, colClasses = "numeric", na.strings = "NA", check.names = FALSE)
  m <- as.matrix(df)
  text <- do.call(rbind, strsplit(readLines(path)[-1], ",", fixed = TRUE))
  if (!identical(unname(matrix(fmt17(m), nrow(m))), unname(text))) {
    stop(path, ": numbers do not read back exactly as written")
  }
  m
}

write_numeric_csv <- function(m, path) {
  body <- apply(matrix(fmt17(m), nrow(m)), 1, paste, collapse = ",")
  tmp <- paste0(path, ".tmp")
  writeLines(c(paste(colnames(m), collapse = ","), body), tmp)
  file.rename(tmp, path)
  back <- read_numeric_csv(path)
  if (!identical(unname(back), unname(m))) stop(path, ": written values do not read back")
}

read_case <- function(spec) {
  dir <- file.path(FIXTURES, spec$name)
  data <- read_numeric_csv(file.path(dir, "data.csv"))
  kinds <- vapply(spec$covariates, function(c) c$kind, "")
  names(kinds) <- vapply(spec$covariates, function(c) c$name, "")
  classes <- c(batch = "character", ifelse(kinds == "continuous", "numeric", "character"))
  samples <- read.csv(file.path(dir, "samples.csv"), colClasses = classes, check.names = FALSE)
  for (name in names(kinds)[kinds == "categorical"]) {
    samples[[name]] <- factor(samples[[name]], levels = sorted_levels(samples[[name]]))
  }
  batch <- factor(samples$batch, levels = sorted_levels(samples$batch))
  mod <- if (length(kinds) == 0) NULL else
    model.matrix(as.formula(paste("~", paste(names(kinds), collapse = " + "))), data = samples)
  list(data = data, samples = samples, batch = batch, mod = mod, dir = dir)
}

# ---------------------------------------------------------------------------------------------
# An independent implementation of the ComBat steps (written from the method's description, not
# from sva's code). Orientation as in sva: dat is features x samples.
# ---------------------------------------------------------------------------------------------

# Features that are constant inside some batch with at least two samples; ComBat leaves them
# unadjusted (and estimates its priors without them).
constant_features <- function(dat, batch) {
  out <- rep(FALSE, nrow(dat))
  for (lev in levels(batch)) {
    cols <- which(batch == lev)
    if (length(cols) < 2) next
    block <- dat[, cols, drop = FALSE]
    rng <- apply(block, 1, function(v) diff(range(v, na.rm = TRUE)))
    out <- out | (rng == 0)
  }
  out
}

# Row-wise sample variance (divisor n - 1) ignoring NA.
row_var <- function(m) {
  apply(m, 1, function(v) {
    v <- v[!is.na(v)]
    sum((v - mean(v))^2) / (length(v) - 1)
  })
}

# Standardization. Design = one indicator column per batch (no intercept) followed by the
# covariate columns of mod (its intercept dropped); B-hat by least squares (per feature on its
# observed samples when values are missing). Grand mean = batch coefficients weighted by
# n_batch / n, or the reference batch's coefficient. Pooled variance = mean squared residual
# (divisor n; only the reference batch's residuals with a reference), or, when any value is
# missing, the n - 1 variance of the residuals. s = (x - grand mean - covariate effects) / sd.
# gamma-hat = per-batch mean of s; delta-hat = per-batch n - 1 variance of s (1 if mean-only).
combat_standardize <- function(dat, batch, mod = NULL, mean.only = FALSE, ref.batch = NULL) {
  n <- ncol(dat)
  levs <- levels(batch)
  k <- length(levs)
  cols <- lapply(levs, function(l) which(batch == l))
  n.b <- vapply(cols, length, 0L)
  ind <- sapply(levs, function(l) as.numeric(batch == l))
  covs <- NULL
  if (!is.null(mod)) {
    intercept <- apply(mod, 2, function(v) all(v == 1))
    covs <- mod[, !intercept, drop = FALSE]
    if (ncol(covs) == 0) covs <- NULL
  }
  X <- cbind(ind, covs)
  if (qr(X)$rank < ncol(X)) stop("design is not of full rank (a covariate is confounded)")
  has.na <- anyNA(dat)
  if (!has.na) {
    B <- qr.coef(qr(X), t(dat))                          # ncol(X) x features
  } else {
    B <- sapply(seq_len(nrow(dat)), function(g) {
      obs <- !is.na(dat[g, ])
      qr.coef(qr(X[obs, , drop = FALSE]), dat[g, obs])
    })
  }
  ref <- if (is.null(ref.batch)) NULL else match(ref.batch, levs)
  grand <- if (is.null(ref)) colSums(B[1:k, , drop = FALSE] * (n.b / n)) else B[ref, ]
  cov.effect <- if (is.null(covs)) matrix(0, nrow(dat), n) else
    t(covs %*% B[-(1:k), , drop = FALSE])
  stand.mean <- grand + cov.effect                        # features x samples
  resid <- dat - t(X %*% B)
  pool <- if (is.null(ref)) seq_len(n) else cols[[ref]]
  var.pooled <- if (!has.na) rowMeans(resid[, pool, drop = FALSE]^2) else
    row_var(resid[, pool, drop = FALSE])
  s <- (dat - stand.mean) / sqrt(var.pooled)
  gamma.hat <- t(sapply(cols, function(c) rowMeans(s[, c, drop = FALSE], na.rm = TRUE)))
  delta.hat <- if (mean.only) matrix(1, k, nrow(dat)) else
    t(sapply(cols, function(c) row_var(s[, c, drop = FALSE])))
  if (k == 1) stop("need at least two batches")
  list(s = s, stand.mean = stand.mean, var.pooled = var.pooled, gamma.hat = gamma.hat,
       delta.hat = delta.hat, cols = cols, ref = ref, k = k)
}

# Adjustment: x* = (s - gamma*) / sqrt(delta*) * sqrt(pooled variance) + stand.mean, reference
# batch samples returned exactly as given.
combat_adjust <- function(dat, st, gamma.star, delta.star) {
  out <- st$s
  for (i in seq_len(st$k)) {
    c <- st$cols[[i]]
    out[, c] <- (st$s[, c, drop = FALSE] - gamma.star[i, ]) / sqrt(delta.star[i, ])
  }
  out <- out * sqrt(st$var.pooled) + st$stand.mean
  if (!is.null(st$ref)) out[, st$cols[[st$ref]]] <- dat[, st$cols[[st$ref]]]
  out
}

# The no-EB variant (sva has no switch for it): the same estimation steps as ComBat, then the
# batch effects are removed with their plain estimates, gamma* = gamma-hat and delta* = delta-hat
# (delta* = 1 when mean.only). Features constant inside a batch are refused: their delta-hat is 0.
combat_no_eb <- function(dat, batch, mod = NULL, mean.only = FALSE) {
  if (any(constant_features(dat, batch))) stop("a feature is constant inside a batch")
  st <- combat_standardize(dat, batch, mod, mean.only = mean.only)
  gamma.star <- st$gamma.hat
  delta.star <- if (mean.only) matrix(1, st$k, nrow(dat)) else st$delta.hat
  combat_adjust(dat, st, gamma.star, delta.star)
}

# Empirical Bayes, parametric. Priors across features per batch: gamma ~ N(gamma.bar, tau2);
# delta ~ InvGamma(a, b) by moments of delta-hat. Posterior mean/variance are iterated from
# delta-hat until the largest relative change of both is <= tol. rule = "sva" measures the change
# relative to the previous value with its sign (so features whose previous gamma is negative never
# hold the loop, as in sva 3.46); rule = "abs" uses |previous value|.
eb_parametric <- function(st, mean.only, rule = c("sva", "abs"), tol = 1e-4, max.iter = 100000) {
  rule <- match.arg(rule)
  G <- ncol(st$gamma.hat)
  gamma.star <- delta.star <- matrix(NA_real_, st$k, G)
  iters <- integer(st$k)
  for (i in seq_len(st$k)) {
    g.hat <- st$gamma.hat[i, ]
    d.hat <- st$delta.hat[i, ]
    g.bar <- mean(g.hat)
    tau2 <- var(g.hat)
    if (mean.only) {
      gamma.star[i, ] <- (tau2 * g.hat + g.bar) / (tau2 + 1)
      delta.star[i, ] <- 1
      next
    }
    m <- mean(d.hat)
    s2 <- var(d.hat)
    a <- (2 * s2 + m^2) / s2
    b <- (m * s2 + m^3) / s2
    x <- st$s[, st$cols[[i]], drop = FALSE]
    n <- rowSums(!is.na(x))
    g.old <- g.hat
    d.old <- d.hat
    for (it in seq_len(max.iter)) {
      g.new <- (tau2 * n * g.hat + d.old * g.bar) / (tau2 * n + d.old)
      ss <- rowSums((x - g.new)^2, na.rm = TRUE)
      d.new <- (0.5 * ss + b) / (n / 2 + a - 1)
      den.g <- if (rule == "sva") g.old else abs(g.old)
      change <- max(abs(g.new - g.old) / den.g, abs(d.new - d.old) / d.old)
      g.old <- g.new
      d.old <- d.new
      if (change <= tol) break
    }
    if (change > tol) stop("parametric EB did not converge")
    iters[i] <- it
    gamma.star[i, ] <- g.new
    delta.star[i, ] <- d.new
  }
  list(gamma.star = gamma.star, delta.star = delta.star, iterations = iters)
}

# Empirical Bayes, non-parametric: for feature g, gamma*_g and delta*_g are the averages of the
# other features' (gamma-hat_k, delta-hat_k) weighted by the likelihood of feature g's standardized
# data under N(gamma-hat_k, delta-hat_k). Computed in log space from sum(x) and sum(x^2). Also
# returns, per batch, the smallest over features g of the largest over k of the log10 of the two
# factors R evaluates in linear space (1/(2 pi d)^(n/2) * exp(-sum2/(2d))): when it is well above
# -300, R's linear-space sums neither underflow nor lose precision.
eb_nonparametric <- function(st, mean.only) {
  G <- ncol(st$gamma.hat)
  gamma.star <- delta.star <- matrix(NA_real_, st$k, G)
  margin <- numeric(st$k)
  for (i in seq_len(st$k)) {
    g.k <- st$gamma.hat[i, ]
    d.k <- if (mean.only) rep(1, G) else st$delta.hat[i, ]
    x <- st$s[, st$cols[[i]], drop = FALSE]
    n <- rowSums(!is.na(x))
    sx <- rowSums(x, na.rm = TRUE)
    sx2 <- rowSums(x^2, na.rm = TRUE)
    sum2 <- outer(sx2, rep(1, G)) - 2 * outer(sx, g.k) + outer(n, g.k^2)    # g x k
    log.exp <- -sum2 / (2 * outer(rep(1, G), d.k))
    log.pre <- -outer(n / 2, log(2 * pi * d.k))
    loglik <- log.pre + log.exp
    diag(loglik) <- -Inf
    w <- exp(loglik - apply(loglik, 1, max))
    gamma.star[i, ] <- (w %*% g.k) / rowSums(w)
    delta.star[i, ] <- (w %*% d.k) / rowSums(w)
    worst <- pmin(log.exp, log.pre + log.exp, log.pre, -log.pre)
    diag(worst) <- -Inf
    margin[i] <- min(apply(worst, 1, max)) / log(10)
  }
  list(gamma.star = gamma.star, delta.star = delta.star, log10.margin = margin)
}

# Full independent ComBat (features constant in a batch left unadjusted, as sva does).
combat_independent <- function(dat, batch, mod, par.prior, mean.only, ref.batch, rule = "sva",
                               tol = if (rule == "sva") 1e-4 else 1e-13) {
  keep <- !constant_features(dat, batch)
  st <- combat_standardize(dat[keep, , drop = FALSE], batch, mod, mean.only, ref.batch)
  eb <- if (par.prior) eb_parametric(st, mean.only, rule = rule, tol = tol) else
    eb_nonparametric(st, mean.only)
  if (!is.null(st$ref)) {
    eb$gamma.star[st$ref, ] <- 0
    eb$delta.star[st$ref, ] <- 1
  }
  out <- dat
  out[keep, ] <- combat_adjust(dat[keep, , drop = FALSE], st, eb$gamma.star, eb$delta.star)
  list(out = out, eb = eb, st = st, keep = keep)
}

# ---------------------------------------------------------------------------------------------
# Running sva::ComBat
# ---------------------------------------------------------------------------------------------

run_sva <- function(dat, batch, mod, par.prior, mean.only, ref.batch) {
  msgs <- character()
  printed <- NULL
  out <- withCallingHandlers(
    {
      printed <- capture.output(res <- ComBat(dat = dat, batch = batch, mod = mod,
                                              par.prior = par.prior, mean.only = mean.only,
                                              ref.batch = ref.batch))
      res
    },
    message = function(m) {
      msgs <<- c(msgs, conditionMessage(m))
      invokeRestart("muffleMessage")
    })
  list(out = out, messages = c(printed, msgs))
}

# Largest difference between two features x samples matrices, in units of each feature's pooled
# standard deviation.
std_diff <- function(a, b, var.pooled) max(abs(a - b) / sqrt(var.pooled), na.rm = TRUE)

check <- function(ok, ...) if (!isTRUE(ok)) stop(..., call. = FALSE)

# ---------------------------------------------------------------------------------------------
# Validation of the no-EB path against sva on a data set of its own: as the spread of the batch
# shifts across features grows (prior on gamma nearly flat, tau2 -> infinity), sva's mean-only
# gamma* = (tau2 gamma-hat + gamma-bar) / (tau2 + 1) tends to gamma-hat, so sva's output must tend
# to combat_no_eb(mean.only = TRUE), the gap shrinking like 1 / scale.
# ---------------------------------------------------------------------------------------------

flat_prior_check <- function() {
  set.seed(20240601)
  G <- 2000
  batch <- factor(rep(c("siteA", "siteB", "siteC"), c(10, 15, 20)))
  noise <- matrix(rnorm(G * length(batch)), G)
  shape <- matrix(rnorm(G * 3), G)
  lines <- character()
  gaps <- numeric()
  for (scale in c(1, 10, 100, 1000)) {
    dat <- noise + scale * shape[, as.integer(batch)] + 100
    sva.out <- run_sva(dat, batch, NULL, TRUE, TRUE, NULL)$out
    st <- combat_standardize(dat, batch, NULL, mean.only = TRUE)
    gap <- std_diff(sva.out, combat_no_eb(dat, batch, NULL, mean.only = TRUE), st$var.pooled)
    gaps <- c(gaps, gap)
    lines <- c(lines, sprintf("  shift scale %6g: max |sva mean-only - no-EB mean-only| = %.3g sd",
                              scale, gap))
  }
  # once tau2 >> 1 (scales 10 and up) the gap must fall tenfold per tenfold scale
  check(all(diff(log10(gaps))[-1] < -0.9) && gaps[4] < 0.01,
        "no-EB is not the flat-prior limit of sva mean-only")
  lines
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

main <- function() {
  specs <- fromJSON(file.path(FIXTURES, "cases.json"), simplifyVector = FALSE)
  report <- c("Checks made by make_fixtures.R (differences in units of the feature's pooled sd)", "")
  for (spec in specs) {
    cs <- read_case(spec)
    dat <- t(cs$data)                                    # features x samples, as sva wants
    ref.batch <- if (is.null(spec$ref_batch)) NULL else spec$ref_batch
    lines <- sprintf("%s:", spec$name)
    if (isTRUE(spec$eb)) {
      r <- run_sva(dat, cs$batch, cs$mod, spec$par_prior, spec$mean_only, ref.batch)
      out <- r$out
      ind <- combat_independent(dat, cs$batch, cs$mod, spec$par_prior, spec$mean_only, ref.batch)
      vp <- rep(1, nrow(dat))
      vp[ind$keep] <- ind$st$var.pooled
      gap <- std_diff(out, ind$out, vp)
      check(gap < 1e-9, spec$name, ": independent implementation differs from sva by ", gap)
      lines <- c(lines, sprintf("  independent re-implementation vs sva: %.3g", gap))
      if (spec$par_prior && !spec$mean_only) {
        tight <- combat_independent(dat, cs$batch, cs$mod, TRUE, FALSE, ref.batch, rule = "abs")
        unsigned <- combat_independent(dat, cs$batch, cs$mod, TRUE, FALSE, ref.batch,
                                       rule = "abs", tol = 1e-4)
        lines <- c(lines,
          sprintf("  parametric EB iterations per batch (sva's rule): %s",
                  paste(ind$eb$iterations, collapse = "/")),
          sprintf("  sva vs EB iterated to 1e-13: %.3g", std_diff(out, tight$out, vp)),
          sprintf("  sva vs EB stopped at 1e-4 with |previous| in the relative change: %.3g",
                  std_diff(out, unsigned$out, vp)))
      }
      if (!spec$par_prior) {
        m <- min(ind$eb$log10.margin)
        check(m > -250, spec$name, ": non-parametric likelihood close to underflow: 1e", m)
        lines <- c(lines, sprintf("  smallest best likelihood factor evaluated by R: 1e%.0f", m))
      }
      unadjusted <- which(!ind$keep)
      if (length(unadjusted) > 0) {
        msg <- grep("uniform expression", r$messages, value = TRUE)
        check(length(msg) == 1 &&
                grepl(sprintf("Found %d genes", length(unadjusted)), msg),
              spec$name, ": sva did not report the constant features")
        lines <- c(lines, sprintf("  sva: %s", trimws(msg)))
      }
    } else {
      out <- combat_no_eb(dat, cs$batch, cs$mod, mean.only = spec$mean_only)
      st <- combat_standardize(dat, cs$batch, cs$mod, mean.only = spec$mean_only)
      # After removing gamma-hat and delta-hat, every batch's standardized data have mean 0 and
      # variance 1 (mean-only: mean 0 and their original spread).
      z <- (out - st$stand.mean) / sqrt(st$var.pooled)
      worst <- 0
      for (i in seq_len(st$k)) {
        c <- st$cols[[i]]
        worst <- max(worst, abs(rowMeans(z[, c])))
        target <- if (spec$mean_only) row_var(st$s[, c]) else 1
        worst <- max(worst, abs(row_var(z[, c]) - target))
      }
      check(worst < 1e-12, spec$name, ": no-EB output is not standardized per batch: ", worst)
      lines <- c(lines, sprintf("  per-batch mean 0 / variance %s after no-EB: worst %.3g",
                                if (spec$mean_only) "unchanged" else "1", worst))
      unadjusted <- integer()
    }

    # Output sanity: finite exactly where the input is; changed everywhere it should be.
    check(identical(is.finite(out), is.finite(dat)), spec$name, ": non-finite output")
    check(identical(is.na(out), is.na(dat)), spec$name, ": NA pattern changed")
    frozen <- matrix(FALSE, nrow(dat), ncol(dat))
    frozen[unadjusted, ] <- TRUE
    if (!is.null(ref.batch)) frozen[, cs$batch == ref.batch] <- TRUE
    obs <- !is.na(dat)
    check(all(out[frozen & obs] == dat[frozen & obs]), spec$name, ": frozen values changed")
    d <- abs(out - dat)[!frozen & obs]
    check(all(d > 0), spec$name, ": some values were not adjusted")
    lines <- c(lines, sprintf("  |expected - data| over adjusted values: min %.3g, max %.3g",
                              min(d), max(d)))

    result <- t(out)
    colnames(result) <- colnames(cs$data)
    write_numeric_csv(result, file.path(cs$dir, "expected.csv"))
    report <- c(report, lines)
    message(paste(lines, collapse = "\n"))
  }

  report <- c(report, "", "no-EB as the flat-prior limit of sva mean-only (2000 features):",
              flat_prior_check())
  writeLines(report, file.path(FIXTURES, "checks.txt"))

  versions <- file.path(FIXTURES, "VERSIONS.txt")
  old <- if (file.exists(versions)) readLines(versions) else character()
  old <- old[!grepl("^(R|sva|BLAS|LAPACK):", old)]
  writeLines(c(old,
               sprintf("R: %s", R.version.string),
               sprintf("sva: %s", as.character(packageVersion("sva"))),
               sprintf("BLAS: %s", basename(extSoftVersion()[["BLAS"]])),
               sprintf("LAPACK: %s", basename(La_library()))),
             versions)
}

main()
