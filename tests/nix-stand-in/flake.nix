{
  description = ''
    A stand-in for the few nixpkgs attributes ecs-ipam's flake.nix uses, so that CI can
    evaluate that flake offline (nix flake check --no-build --override-input nixpkgs ...).
    Each attribute yields a real derivation of the same shape; none of them can be built.
  '';

  outputs = { self }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      unbuildable = "echo 'tests/nix-stand-in is for evaluation only' >&2; exit 1";

      pkgsFor = system:
        let
          package = name: builtins.derivation {
            inherit name system;
            builder = "/bin/sh";
            args = [ "-c" unbuildable ];
          };
          # Like stdenv.mkDerivation: every attribute becomes the build's environment.
          mkDerivation = attrs: builtins.derivation ({
            name = attrs.name or "${attrs.pname}-${attrs.version}";
          } // removeAttrs attrs [ "pname" "version" ] // {
            inherit system;
            builder = "/bin/sh";
            args = [ "-c" unbuildable ];
          });
        in
        {
          stdenv = { inherit mkDerivation; };
          mkShell = { packages ? [ ], ... }@attrs:
            mkDerivation ({ name = "nix-shell"; } // removeAttrs attrs [ "packages" ] // {
              nativeBuildInputs = packages;
            });
          python3 = package "python3-3.11.10";
          python3Packages = {
            shiv = package "python3.11-shiv-1.0.8";
            pytest = package "python3.11-pytest-8.3.3";
          };
        };
    in
    {
      legacyPackages = builtins.listToAttrs (map (system: {
        name = system;
        value = pkgsFor system;
      }) systems);
    };
}
