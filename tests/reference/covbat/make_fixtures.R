#!/usr/bin/env Rscript
# Reference outputs of R CovBat 0.1.0 (andy1764/CovBat_Harmonization, R/ folder) for imharmony's
# CovBat parity tests. See README.md next to this file.
#
# Simulates every case with a fixed seed (R's default Mersenne-Twister / Inversion RNG), runs
# CovBat::covbat() with its defaults except where the case says otherwise, and writes, per case,
#   fixtures/<case>/data.csv      samples x features (f01, f02, ...), "%.17g"
#   fixtures/<case>/samples.csv   batch, age, sex
#   fixtures/<case>/expected.csv  covbat(...)$dat.covbat transposed to samples x features
# and fixtures/cases.json (the call of every case and the number of PCs covbat harmonized),
# fixtures/VERSIONS.txt. Every number written is read back and checked to be the same double.
#
# Run: R_LIBS=<library holding CovBat> Rscript make_fixtures.R

suppressPackageStartupMessages({
  library(CovBat)
  library(jsonlite)
})

script_dir <- function() {
  args <- commandArgs(trailingOnly = FALSE)
  file <- sub("^--file=", "", args[grep("^--file=", args)])
  if (length(file) == 1) dirname(normalizePath(file)) else getwd()
}
FIXTURES <- file.path(script_dir(), "fixtures")
fmt17 <- function(x) sprintf("%.17g", x)

write_csv17 <- function(df, path) {
  cols <- lapply(df, function(x) if (is.numeric(x)) fmt17(x) else as.character(x))
  body <- do.call(paste, c(cols, sep = ","))
  writeLines(c(paste(names(df), collapse = ","), body), path)
  back <- read.csv(path, check.names = FALSE, stringsAsFactors = FALSE)
  for (k in names(df)) if (!identical(back[[k]], df[[k]])) stop(path, ": column ", k, " does not read back")
}

# Sites differ in location, scale and in the covariance between features (a site-specific
# mixing of a few latent factors), age and sex carry a real effect, site sizes are unequal.
simulate <- function(seed, n_per_site, n_features, n_factors = 4) {
  set.seed(seed)
  sites <- sprintf("site%s", LETTERS[seq_along(n_per_site)])
  batch <- rep(sites, n_per_site)
  n <- length(batch)
  age <- round(runif(n, 20, 80), 1)
  sex <- sample(c("F", "M"), n, replace = TRUE)
  mu <- rnorm(n_features, 100, 30)
  b_age <- rnorm(n_features, 0, 0.3)
  b_sex <- rnorm(n_features, 0, 2)
  x <- matrix(0, n, n_features)
  for (s in sites) {
    rows <- which(batch == s)
    load <- matrix(rnorm(n_factors * n_features, 0, 3), n_factors, n_features)
    common <- matrix(rnorm(length(rows) * n_factors), length(rows), n_factors) %*% load
    noise <- matrix(rnorm(length(rows) * n_features), length(rows), n_features) *
      matrix(runif(n_features, 1, 4), length(rows), n_features, byrow = TRUE)
    shift <- matrix(rnorm(n_features, 0, 5), length(rows), n_features, byrow = TRUE)
    x[rows, ] <- common + noise + shift
  }
  x <- x + matrix(mu, n, n_features, byrow = TRUE) + outer(age, b_age) + outer(sex == "M", b_sex)
  colnames(x) <- sprintf("f%02d", seq_len(n_features))
  list(x = x, samples = data.frame(batch = batch, age = age, sex = sex, stringsAsFactors = FALSE))
}

CASES <- list(
  list(name = "default_cov", description = "covbat defaults, mod = ~ age + sex, 3 sites",
       seed = 11, n_per_site = c(30, 45, 25), n_features = 40, covariates = TRUE,
       percent_var = 0.95, n_pc = NULL, std_var = TRUE),
  list(name = "npc5_unscaled", description = "n.pc = 5, std.var = FALSE, no covariates, 4 sites",
       seed = 12, n_per_site = c(20, 35, 15, 30), n_features = 25, covariates = FALSE,
       percent_var = 0.95, n_pc = 5, std_var = FALSE),
  list(name = "wide_cov", description = "more features than samples (60 x 90), percent.var = 0.8",
       seed = 13, n_per_site = c(22, 18, 20), n_features = 90, covariates = TRUE,
       percent_var = 0.8, n_pc = NULL, std_var = TRUE)
)

dir.create(FIXTURES, showWarnings = FALSE)
specs <- list()
for (case in CASES) {
  sim <- simulate(case$seed, case$n_per_site, case$n_features)
  dir <- file.path(FIXTURES, case$name)
  dir.create(dir, showWarnings = FALSE)
  write_csv17(as.data.frame(sim$x), file.path(dir, "data.csv"))
  write_csv17(sim$samples, file.path(dir, "samples.csv"))
  samples <- sim$samples
  samples$sex <- factor(samples$sex, levels = c("F", "M"))
  mod <- if (case$covariates) model.matrix(~ age + sex, data = samples) else NULL
  bat <- factor(samples$batch, levels = sort(unique(samples$batch)))
  out <- covbat(t(sim$x), bat, mod = mod, percent.var = case$percent_var, n.pc = case$n_pc,
                std.var = case$std_var)
  expected <- t(out$dat.covbat)
  colnames(expected) <- colnames(sim$x)
  if (!all(is.finite(expected))) stop(case$name, ": non-finite output")
  write_csv17(as.data.frame(expected), file.path(dir, "expected.csv"))
  specs[[length(specs) + 1]] <- list(
    name = case$name, description = case$description,
    n_samples = nrow(sim$x), n_features = ncol(sim$x),
    covariates = if (case$covariates) c("age", "sex") else character(0),
    percent_var = case$percent_var, n_pc = if (is.null(case$n_pc)) NA else case$n_pc,
    std_var = case$std_var, npc_used = out$npc,
    max_abs_change = max(abs(expected - sim$x))
  )
  cat(case$name, ": npc =", out$npc, "\n")
}
writeLines(toJSON(specs, auto_unbox = TRUE, pretty = TRUE, digits = NA, na = "null"),
           file.path(FIXTURES, "cases.json"))
writeLines(c(
  paste("R:", R.version.string),
  paste("CovBat:", as.character(packageVersion("CovBat")),
        "(andy1764/CovBat_Harmonization commit 1ca2942b4e3830dff6f027f276fdab305a0d10e6, R/)"),
  paste("matrixStats:", as.character(packageVersion("matrixStats"))),
  paste("BLAS:", basename(extSoftVersion()[["BLAS"]])),
  paste("LAPACK:", basename(La_library()))
), file.path(FIXTURES, "VERSIONS.txt"))
