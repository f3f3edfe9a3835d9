{
  description = "ecs-ipam: the Amazon ECS IPAM CNI plugin as one reproducible shiv zipapp";

  # Run `nix flake lock` on a machine that reaches GitHub and commit flake.lock to pin it.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f:
        builtins.listToAttrs (map (system: {
          name = system;
          value = f system nixpkgs.legacyPackages.${system};
        }) systems);
      version = builtins.head
        (builtins.match ''.*VERSION = "([^"]+)".*'' (builtins.readFile ./ecs_ipam/buildinfo.py));

      # The same tools/pack.py as ./build.sh, offline: shiv gets the staged package through
      # --site-packages and never runs pip. The shebang names the store's python3, which has dbm.gnu.
      ecs-ipam = pkgs: pkgs.stdenv.mkDerivation {
        pname = "ecs-ipam";
        inherit version;
        src = self; # only the files git tracks
        nativeBuildInputs = [ pkgs.python3 pkgs.python3Packages.shiv ];
        dontConfigure = true;
        buildPhase = ''
          runHook preBuild
          SOURCE_DATE_EPOCH=${toString self.lastModified} \
          GIT_SHORT_HASH=${self.shortRev or "dirty"} \
          GIT_DIRTY=${if self ? rev then "0" else "1"} \
            python3 tools/pack.py --python ${pkgs.python3}/bin/python3 --output dist/ecs-ipam
          runHook postBuild
        '';
        installPhase = ''
          runHook preInstall
          install -D -m 0755 dist/ecs-ipam $out/bin/ecs-ipam
          runHook postInstall
        '';
        # The zipapp is finished as built: no shebang patching, no stripping.
        dontFixup = true;
      };
    in
    {
      packages = forAllSystems (system: pkgs: {
        default = ecs-ipam pkgs;
      });

      checks = forAllSystems (system: pkgs: {
        default = pkgs.stdenv.mkDerivation {
          name = "ecs-ipam-tests-${version}";
          src = self;
          nativeBuildInputs = [ pkgs.python3 pkgs.python3Packages.pytest ];
          dontConfigure = true;
          dontBuild = true;
          doCheck = true;
          # Tests that need root, git or nix skip themselves in the build sandbox. PYTHONPATH lets
          # the Python processes that tests start import ecs_ipam from the source, as .venv does.
          checkPhase = ''
            runHook preCheck
            export HOME=$TMPDIR PYTHONPATH=$PWD''${PYTHONPATH:+:$PYTHONPATH}
            ECS_IPAM_ARTIFACT=${self.packages.${system}.default}/bin/ecs-ipam \
              python3 -m pytest -p no:cacheprovider tests
            runHook postCheck
          '';
          installPhase = "touch $out";
        };
      });

      devShells = forAllSystems (system: pkgs: {
        default = pkgs.mkShell {
          packages = [ pkgs.python3 pkgs.python3Packages.shiv pkgs.python3Packages.pytest ];
        };
      });
    };
}
