from idds_vis.cli.main import main

main()
